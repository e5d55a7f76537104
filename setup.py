"""Everything is in setup.cfg but one file: ``augment-trace.pth``, which goes to the root of
site-packages so that ``AUGMENT_TRACE_DIR`` traces programs that never import augment."""

import os

from setuptools import setup
from setuptools.command.build_py import build_py

HOOK = "augment-trace.pth"


class BuildWithTraceHook(build_py):
    def run(self):
        super().run()
        self.copy_file(HOOK, os.path.join(self.build_lib, HOOK))

    def get_outputs(self, include_bytecode=1):
        return [*super().get_outputs(include_bytecode), os.path.join(self.build_lib, HOOK)]


setup(cmdclass={"build_py": BuildWithTraceHook})
