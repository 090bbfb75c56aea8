"""Build the optional compiled helper ``trio_sudp.vpn._offload`` when a C compiler is there.

It makes the TSO segmentation of TUN reads and the completion of partial checksums
(``trio_sudp/vpn/segment.py``) several times cheaper; without it (no compiler, or
``TRIO_SUDP_NATIVE=0``) the package is pure Python and takes the fallback path, which
gives the same packets. A wheel with the helper is tagged for its platform.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

SOURCE = Path("src/trio_sudp/vpn/_offload.c")


class NativeHelperHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or os.environ.get("TRIO_SUDP_NATIVE") == "0":
            return
        source = Path(self.root) / SOURCE
        suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
        if version == "editable":
            target = source.with_name(f"_offload{suffix}")
        else:
            target = Path(tempfile.mkdtemp(prefix="trio-sudp-native-")) / f"_offload{suffix}"
        compiler = shlex.split(sysconfig.get_config_var("CC") or "cc")
        command = [
            *compiler,
            "-shared",
            "-fPIC",
            "-O2",
            "-std=c99",
            f"-I{sysconfig.get_paths()['include']}",
            str(source),
            "-o",
            str(target),
        ]
        try:
            subprocess.run(command, check=True, capture_output=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as exc:
            self.app.display_warning(
                f"trio-sudp: the compiled helper was not built ({exc}); "
                "using the pure Python fallback"
            )
            return
        if version != "editable":
            build_data["force_include"][str(target)] = f"trio_sudp/vpn/_offload{suffix}"
            build_data["pure_python"] = False
            build_data["infer_tag"] = True
