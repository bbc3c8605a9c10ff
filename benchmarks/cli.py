"""What the benchmark scripts share with train.py: --help, and one line for bad input, not a traceback."""

from config import ConfigError, imports_done, start_command
from data import DataError
from utils import EXIT_BAD_INPUT, DeviceError, fail


def run(main, script_doc, argv):
    """``main(argv)``, after answering -h/--help with the script's docstring and the settings, and
    with output that ends quietly when closed early."""
    start_command(script_doc, argv)
    imports_done()  # the benchmarks import torch before they start
    try:
        main(argv)
    except (ConfigError, DataError, DeviceError) as e:
        fail(e, EXIT_BAD_INPUT)
