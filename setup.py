"""Build hook: wheels carry the JS client, so an installed gateway can serve it.

The client lives in ``client/`` (the npm package). Its published files (the
``files`` list of ``client/package.json``) are copied into the wheel as
``synk/gateway/static/synk-client/``, one of the places
``synk.gateway.static.client_dir()`` looks. An editable install serves them
from the source tree instead.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CLIENT = Path(__file__).resolve().parent / "client"


class BuildPyWithClient(build_py):
    """build_py, then the client's published files."""

    def run(self) -> None:
        super().run()
        dest = Path(self.build_lib) / "synk" / "gateway" / "static" / "synk-client"
        if dest.exists():
            shutil.rmtree(dest)
        dest.mkdir(parents=True)
        shutil.copy2(CLIENT / "package.json", dest / "package.json")
        for entry in json.loads((CLIENT / "package.json").read_text("utf-8"))["files"]:
            source = CLIENT / entry
            if source.is_dir():
                shutil.copytree(source, dest / entry)
            else:
                (dest / entry).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, dest / entry)


setup(cmdclass={"build_py": BuildPyWithClient})
