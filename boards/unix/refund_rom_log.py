# Minimal logger for the boot ROM stage, before firmware is importable.
def log(tag, msg, level="INFO"):
    print("rom %s %s: %s" % (level, tag, msg))
