"""`screen bench commands`: every read-only command timed in its own process, and the imports
`screen status` spends its time on, from the interpreter's own -X importtime."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from pneumoscreen.worker.bench.commands import COMMANDS
from pneumoscreen.worker.cli import app


def test_bench_commands_times_each_read_only_command_and_names_the_imports() -> None:
    result = CliRunner().invoke(app, ["bench", "commands", "--runs", "1", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [t["command"] for t in data["commands"]] == [" ".join(c) for c in COMMANDS]
    for t in data["commands"]:
        assert t["cpu_median_s"] > 0 and 0 < t["wall_median_s"] < 60 and t["runs"] == 1
    imports = data["heaviest_imports_us"]
    assert "pneumoscreen.worker.cli" in imports and all(v > 0 for v in imports.values())

