"""Build script: metadata lives in setup.cfg; this only adds the optional C accelerator.

``restore._headerscan`` speeds up the header scan of a cold ``mailrestore
scan``. It is optional: where it cannot be compiled (no C compiler, no
Python headers) the install goes on and identity.py uses its own Python
scan, which gives the same results.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("restore._headerscan", ["restore/_headerscan.c"], optional=True)])
