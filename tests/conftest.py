"""Settings shared by the whole suite.

Apps built in the test process serve eagerly (``T2MIR_COMPILE_STEP=off``; server subprocesses get
``--compile off`` from `server_process.ServerProcess`) unless a test asks for the compiled decode
step: compiling takes tens of seconds per model load, and the suite builds dozens of apps. The compiled step has its own tests (``tests/model/test_fused_step.py``,
the ``--compile`` replica of ``tests/server/test_e2e_darkroom.py``). A value already in the
environment is kept.
"""

import os

os.environ.setdefault("T2MIR_COMPILE_STEP", "off")
