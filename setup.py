"""Everything is in setup.cfg but the packages and two placements: ``augment-trace.pth``, which
goes to the root of site-packages so that ``AUGMENT_TRACE_DIR`` traces programs that never
import augment, and the shipped configs, kept in ``configs/`` at the top of the repository and
installed as ``augment/profiler/configs`` (usable by name: ``--config kaggle_amazon``)."""

import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HOOK = "augment-trace.pth"


class BuildWithTraceHook(build_py):
    def run(self):
        super().run()
        self.copy_file(HOOK, os.path.join(self.build_lib, HOOK))

    def get_outputs(self, include_bytecode=1):
        return [*super().get_outputs(include_bytecode), os.path.join(self.build_lib, HOOK)]


CONFIGS = "augment.profiler.configs"

setup(
    cmdclass={"build_py": BuildWithTraceHook},
    packages=[*find_packages(include=["augment", "augment.*"]), CONFIGS],
    package_dir={CONFIGS: "configs"},
    package_data={CONFIGS: ["*.toml"]},
)
