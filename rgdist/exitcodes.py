"""Process exit codes of the ``rgdist`` command (documented in the README)."""

OK = 0
FAILURE = 1  #: an unexpected error (a bug or a failing system); traceback printed
BAD_INPUT = 2  #: bad input: a campaign file, a run directory or flags; nothing written
LOCKED = 73  #: the run directory is locked by another live job (EX_CANTCREAT)
IO_ERROR = 74  #: a checkpoint or results write failed (disk full, quota, read-only, vanished
#: or unwritable directory): one ``error:`` line with the path and the fix; the previous
#: checkpoint is still current, so ``rgdist resume RUN_DIR`` continues once fixed (EX_IOERR)
REQUEUE = 75  #: pre-empted (SIGTERM/SIGUSR1/SIGUSR2): checkpoint written, re-queue me (EX_TEMPFAIL)
