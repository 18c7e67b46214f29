"""Writes tests/data/sharp_dimensions.json: the thumbnail size sharp gives awkward inputs.

The inputs are `devstack.photos.flat()` files, which the tests regenerate to check make_thumbnail
against the table. Needs node and `npm ci` in scripts/sharp (`make bench-thumbnail` does both):

    .venv/bin/python -m scripts.sharp_dimensions
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path

from devstack.photos import flat

SHARP_DIR = Path(__file__).parent / "sharp"
TABLE = Path(__file__).parent.parent / "tests" / "data" / "sharp_dimensions.json"
BOX = (400, 400)
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "TIFF": "tif", "GIF": "gif"}

# (format, stored width, stored height, EXIF orientation): odd sizes, exact and near-exact
# shrink factors (where sharp steps its JPEG shrink-on-load down), slivers, and rotated photos.
CASES = [
    ("JPEG", 4000, 2667, 1),
    ("JPEG", 4031, 3023, 1),
    ("JPEG", 4032, 3024, 1),
    ("JPEG", 3024, 4032, 1),
    ("JPEG", 6000, 4000, 1),
    ("JPEG", 1920, 1080, 1),
    ("JPEG", 3200, 2400, 1),
    ("JPEG", 1600, 1200, 1),
    ("JPEG", 803, 600, 1),
    ("JPEG", 1291, 2086, 1),
    ("JPEG", 1370, 1057, 1),
    ("JPEG", 371, 1699, 1),
    ("JPEG", 1000, 333, 1),
    ("JPEG", 401, 400, 1),
    ("JPEG", 400, 401, 1),
    ("JPEG", 399, 1200, 1),
    ("JPEG", 7000, 10, 1),
    ("JPEG", 10, 7000, 1),
    ("JPEG", 480, 3, 1),
    ("JPEG", 200, 100, 1),
    ("JPEG", 4000, 2667, 6),
    ("JPEG", 4031, 3023, 8),
    ("JPEG", 1370, 1057, 6),
    ("JPEG", 1291, 2086, 8),
    ("JPEG", 371, 1699, 6),
    ("PNG", 4000, 2667, 1),
    ("PNG", 4031, 3023, 1),
    ("PNG", 1000, 333, 1),
    ("PNG", 401, 400, 1),
    ("PNG", 399, 1200, 1),
    ("PNG", 7000, 10, 1),
    ("PNG", 480, 3, 1),
    ("PNG", 800, 401, 1),
    ("PNG", 1370, 1057, 6),
    ("PNG", 200, 100, 1),
    ("WEBP", 4031, 3023, 1),
    ("WEBP", 1440, 9, 1),
    ("WEBP", 800, 401, 1),
    ("WEBP", 1000, 333, 1),
    ("WEBP", 1370, 1057, 8),
    ("TIFF", 1370, 1057, 1),
    ("GIF", 1291, 2086, 1),
]


def main() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        paths = [_write_input(Path(workdir), index, case) for index, case in enumerate(CASES)]
        command = ["node", "thumbnail.js", "--width", str(BOX[0]), "--height", str(BOX[1])]
        run = subprocess.run(
            [*command, *map(str, paths)], cwd=SHARP_DIR, capture_output=True, text=True, check=True
        )
    results = [json.loads(line) for line in run.stdout.splitlines()]
    table = {
        "produced_by": {
            "sharp": _sharp_versions(),
            "pipeline": "sharp(input).rotate().resize(400, 400, {fit: 'inside', "
            "withoutEnlargement: true}).flatten({background: '#ffffff'}).jpeg({quality: 80})",
            "command": ".venv/bin/python -m scripts.sharp_dimensions",
            "inputs": "devstack.photos.flat(format, width, height, orientation)",
        },
        "box": list(BOX),
        "cases": [
            {
                "format": fmt,
                "width": width,
                "height": height,
                "orientation": orientation,
                "sharp": [result["width"], result["height"]],
            }
            for (fmt, width, height, orientation), result in zip(CASES, results, strict=True)
        ],
    }
    TABLE.parent.mkdir(exist_ok=True)
    TABLE.write_text(_one_case_a_line(table))
    print(f"wrote {len(CASES)} cases to {TABLE}")


def _one_case_a_line(table: dict) -> str:
    fields = [f"  {json.dumps(key)}: {json.dumps(value)}," for key, value in table.items()]
    cases = ",\n".join(f"    {json.dumps(case)}" for case in table["cases"])
    return "{\n" + "\n".join(fields[:-1]) + f'\n  "cases": [\n{cases}\n  ]\n}}\n'


def _write_input(workdir: Path, index: int, case: tuple[str, int, int, int]) -> Path:
    fmt, width, height, orientation = case
    path = workdir / f"{index:02d}-{width}x{height}-{orientation}.{EXTENSIONS[fmt]}"
    path.write_bytes(flat(fmt, width, height, orientation))
    return path


def _sharp_versions() -> dict[str, str]:
    script = "const s = require('sharp'); console.log(JSON.stringify(s.versions))"
    run = subprocess.run(
        ["node", "-e", script], cwd=SHARP_DIR, capture_output=True, text=True, check=True
    )
    versions = json.loads(run.stdout)
    return {"sharp": versions["sharp"], "libvips": versions["vips"]}


if __name__ == "__main__":
    main()
