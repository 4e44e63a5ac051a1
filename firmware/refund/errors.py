# Errors shared by the refund modules: a module that refuses (staff, config, intake,
# the outbox) imports only this, not the module that happens to raise it most.


class Refused(Exception):
    """A refusal: code is a stable reason code (docs/ecr-link.md), text says why."""

    def __init__(self, code, text):
        super().__init__(code, text)
        self.code = code
        self.text = text


class BadTransition(Exception):
    """An outbox change the entry's state does not allow (record.can_move)."""
