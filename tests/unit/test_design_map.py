"""docs/design.md §2 draws the map of deployer/: every module there is on it, and nothing else."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def mapped_modules() -> set[str]:
    """The .py names in §2's map; on a line that starts with a commands/ module, every name is one."""
    text = (REPO / "docs" / "design.md").read_text()
    section = text[text.index("## §2 "):text.index("## §3 ")]
    block = section[section.index("Inside `deployer/`"):].split("```")[1]
    named = set()
    for line in block.splitlines():
        names = re.findall(r"[a-z_/]+\.py\b", line)
        if names and names[0].startswith("commands/"):
            names = [name if name.startswith("commands/") else f"commands/{name}" for name in names]
        named |= set(names)
    return named


def test_the_module_map_names_every_module_of_the_deployer_and_no_other():
    modules = {p.relative_to(REPO / "deployer").as_posix() for p in (REPO / "deployer").rglob("*.py")
               if p.name != "__init__.py"}
    named = mapped_modules()
    assert sorted(modules - named) == [], "modules §2 does not name"
    assert sorted(named - modules) == [], "names in §2 that are no module"
