"""The chart's README values table is generated from values.yaml (scripts/chart_readme.py):
it matches the file, every key is documented, and the generator reads helm-docs' `# --`
syntax the way the chart's values use it."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import chart_readme  # noqa: E402

SAMPLE = """\
# A header comment, not a key's.

# -- Replicas.
replicaCount: 3
image:
  # Ignored: before the marker.
  # -- The tag,
  # on two lines.
  # @default -- the appVersion
  tag: ""
# -- A documented mapping: one row, children included.
probes:
  startup: {periodSeconds: 2}
sidecars:
  # -- Never a row: inside a list.
  - name: x
    # -- Nor this.
    image: y
# -- After the list.
after: true

# -- Separated by a blank line from its key: not its description.

orphan: 1
"""


def test_the_readme_matches_values_yaml() -> None:
    text = chart_readme.VALUES.read_text()
    readme = chart_readme.README.read_text()
    assert chart_readme.current_table(readme) == chart_readme.render_table(text), (
        "charts/kube-stream-runner/README.md is stale: run `python scripts/chart_readme.py --write`"
    )


def test_every_value_is_documented() -> None:
    assert chart_readme.undocumented(chart_readme.VALUES.read_text()) == []


def test_the_generator_reads_helm_docs_comments() -> None:
    rows = {".".join(r.path): r for r in chart_readme.documented_keys(SAMPLE)}
    assert list(rows) == ["replicaCount", "image.tag", "probes", "after"]
    assert rows["image.tag"].description == "The tag, on two lines."
    assert rows["image.tag"].default == "the appVersion"
    table = chart_readme.render_table(SAMPLE).splitlines()
    assert table[2] == "| `replicaCount` | int | `3` | Replicas. |"
    assert table[3] == "| `image.tag` | string | the appVersion | The tag, on two lines. |"
    assert (
        table[4]
        == '| `probes` | object | `{"startup":{"periodSeconds":2}}` | A documented mapping: one row, children included. |'
    )
    # sidecars (a list, with no row of its own) and orphan are what is missing.
    assert chart_readme.undocumented(SAMPLE) == ["sidecars", "orphan"]


def test_a_pipe_in_a_description_does_not_split_the_cell() -> None:
    table = chart_readme.render_table("# -- skip | latest\ncatchUp: skip\n")
    assert table.splitlines()[2] == '| `catchUp` | string | `"skip"` | skip \\| latest |'
