"""Process exit codes of the ``rgdist`` command (documented in the README)."""

OK = 0
FAILURE = 1  #: an unexpected error (a bug or a failing system); traceback printed
BAD_INPUT = 2  #: bad input: a campaign file, a run directory or flags; nothing written
REQUEUE = 75  #: pre-empted (SIGTERM/SIGUSR1/SIGUSR2): checkpoint written, re-queue me (EX_TEMPFAIL)
LOCKED = 73  #: the run directory is locked by another live job (EX_CANTCREAT)
