"""Only what pyproject.toml cannot say. Everything else about the package is in pyproject.toml.

pyproject.toml's ``data-files`` put jupyter-config/ into the environment's etc/jupyter/, where
JupyterLab reads which of nbgrader's extensions students do not see (the README's "For students").
setuptools' editable installs (``pip install -e .``, as requirements.txt does) skip data files: its
``editable_wheel`` asks the distribution for ``has_data()``, a method only ``install`` has, so the files
never reach the wheel. This command installs them as a plain wheel would; the package itself stays
editable. tests/test_jupyterlab.py checks that the environment has them.
"""

from setuptools import setup
from setuptools.command.editable_wheel import editable_wheel


class EditableWheelWithData(editable_wheel):
    def _run_install(self, category: str) -> None:
        if category == "data" and self.distribution.has_data_files():
            self.run_command("install_data")
        else:
            super()._run_install(category)


setup(cmdclass={"editable_wheel": EditableWheelWithData})
