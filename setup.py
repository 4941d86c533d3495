"""The one build step pyproject.toml cannot express: ``divalign_recipe_hook.pth`` at the top of site-packages.

setuptools installs packages and modules, not ``.pth`` files. ``build_py`` here also copies the file to the top of
the build directory, i.e. the top of the wheel, which installers unpack into site-packages (and ``pip uninstall``
removes, from the wheel's RECORD). An editable install (PEP 660) builds no packages: setuptools' ``editable_wheel``
writes the files that are not editable straight into the wheel it is assembling, the ``install`` command's
``install_lib``, and the ``.pth`` goes there. The module the line imports, ``_divalign_recipe_hook``, is an ordinary
top-level module (``py-modules`` in pyproject.toml). tests/test_recipe_scripts.py builds both kinds of wheel.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HOOK_PTH = Path("src") / "divalign_recipe_hook.pth"


class build_py_with_startup_hook(build_py):
    """``build_py``, plus the start-up hook's ``.pth`` at the top of the wheel."""

    def run(self) -> None:
        super().run()
        target = self.get_finalized_command("install").install_lib if self.editable_mode else self.build_lib
        self.copy_file(str(HOOK_PTH), str(Path(target) / HOOK_PTH.name))

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), str(Path(self.build_lib) / HOOK_PTH.name)]

    def get_source_files(self) -> list[str]:
        return [*super().get_source_files(), str(HOOK_PTH)]


setup(cmdclass={"build_py": build_py_with_startup_hook})
