"""Write clients/reaper/index.xml, the ReaPack index, from the scripts' headers.

    python clients/reaper/make_index.py          # rewrite index.xml
    python clients/reaper/make_index.py --check  # exit 1 if index.xml is out of date

Each category folder (e.g. ``Stems/``) holds action scripts ``stembridge_<title>.lua``.
A script with ``@noindex`` is not a package of its own: the package whose ``@provides``
lists it installs it. Sources point at the tagged release on GitHub (REPO_URL, tag
``v<version>``), so a release is: bump ``@version`` everywhere, regenerate, tag.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import escape, quoteattr

HERE = Path(__file__).resolve().parent
REPO_URL = "https://github.com/stembridge/stembridge"
RELEASE_TIME = {"0.2.0": "2026-11-21T00:00:00Z", "0.3.0": "2026-12-01T00:00:00Z",
                "0.4.0": "2026-12-01T17:00:00Z"}
TAG = re.compile(r"^--\s*@(\w+)\s*(.*)$")


def parse_header(path: Path) -> dict[str, object]:
    """The ReaPack tags of a script: {tag: str}; multi-line values joined with newlines;
    `provides` as a list of (section or None, file)."""
    tags: dict[str, object] = {}
    current = None
    lines: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("--"):
            break
        m = TAG.match(line)
        if m:
            if current:
                tags[current] = "\n".join(lines).strip()
            current, lines = m.group(1), [m.group(2)] if m.group(2) else []
        elif current:
            lines.append(line[2:].strip())
    if current:
        tags[current] = "\n".join(lines).strip()
    provides = []
    for entry in str(tags.get("provides", "")).splitlines():
        m = re.match(r"^(?:\[(\w+)\]\s*)?(.+)$", entry.strip())
        if m:
            provides.append((m.group(1), m.group(2).strip()))
    tags["provides"] = provides
    return tags


def _rtf(text: str) -> str:
    body = text.replace("\\", "\\\\").replace("{", "\\{").replace("}", "\\}")
    return "{\\rtf1\\ansi\\deff0\\pard " + body.replace("\n", "\\par\n") + "\\par}"


def _url(version: str, rel: str) -> str:
    return f"{REPO_URL}/raw/v{version}/clients/reaper/{quote(rel)}"


def build() -> str:
    out = ['<?xml version="1.0" encoding="utf-8"?>', '<index version="1" name="stembridge">']
    for category in sorted(p for p in HERE.iterdir() if p.is_dir() and not p.name.startswith(".")):
        packages = []
        for script in sorted(category.glob("stembridge_*.lua")):
            tags = parse_header(script)
            if "noindex" in tags:
                continue
            packages.append((script, tags))
        if not packages:
            continue
        out.append(f"  <category name={quoteattr(category.name)}>")
        for script, tags in packages:
            version = str(tags["version"])
            out.append(f"    <reapack name={quoteattr(script.name)} type=\"script\" "
                       f"desc={quoteattr(str(tags['description']))}>")
            out.append("      <metadata>")
            out.append(f"        <description><![CDATA[{_rtf(str(tags.get('about', '')))}]]>"
                       "</description>")
            out.append(f"        <link rel=\"website\">{escape(REPO_URL)}</link>")
            out.append("      </metadata>")
            out.append(f"      <version name={quoteattr(version)} "
                       f"author={quoteattr(str(tags['author']))} "
                       f"time={quoteattr(RELEASE_TIME[version])}>")
            out.append(f"        <changelog><![CDATA[{tags.get('changelog', '')}]]></changelog>")
            out.append(f"        <source main=\"main\">"
                       f"{escape(_url(version, f'{category.name}/{script.name}'))}</source>")
            for section, rel in tags["provides"]:  # type: ignore[union-attr]
                main = ' main="main"' if section == "main" else ""
                out.append(f"        <source{main} file={quoteattr(rel)}>"
                           f"{escape(_url(version, f'{category.name}/{rel}'))}</source>")
            out.append("      </version>")
            out.append("    </reapack>")
        out.append("  </category>")
    out.append("</index>")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    target = HERE / "index.xml"
    text = build()
    if "--check" in argv:
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            print("clients/reaper/index.xml is out of date: run "
                  "python clients/reaper/make_index.py", file=sys.stderr)
            return 1
        return 0
    target.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
