#!/usr/bin/env python3
"""Copies the OMA and IPSO objects of the OMA LwM2M registry into models/:
the current version of each (models/ID.xml), and the older versions of the
objects the gateway builds in (models/ID-MAJOR_MINOR.xml), so a device that
registers an older version (or a command that names one, /3_1.0/0/9) finds
its model. Each file is copied unchanged, its BSD-3-Clause header with it.
The built-in models (the ones src/lwm2m/library.rs embeds) are not
overwritten.

    scripts/import-registry-models.py [REGISTRY]   (default ../shared/lwm2m-registry)
"""
import re
import shutil
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OWNERS = {"OMA", "IPSO Alliance"}


def version_of(path):
    m = re.search(r"<ObjectVersion>\s*([0-9.]+)\s*</ObjectVersion>", path.read_text("utf-8-sig"))
    return m.group(1) if m else "1.0"


def main():
    reg = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "lwm2m-registry"
    models = ROOT / "models"
    builtin = set(re.findall(r'include_str!\("../../models/(\d+)\.xml"\)',
                             (ROOT / "src/lwm2m/library.rs").read_text()))
    owned = {item.findtext("ObjectID").strip()
             for item in ET.parse(reg / "DDF.xml").getroot().iter("Item")
             if (item.findtext("Owner") or "").strip() in OWNERS}
    copied = 0
    for oid in sorted(owned, key=int):
        src = reg / f"{oid}.xml"
        if not src.exists():
            # Some objects are only in the history: its newest is current.
            history = sorted((reg / "version_history").glob(f"{oid}-*_*.xml"),
                             key=lambda p: tuple(map(int, p.stem.split("-")[1].split("_"))))
            src = history[-1] if history else src
        if oid not in builtin and src.exists():
            shutil.copyfile(src, models / f"{oid}.xml")
            copied += 1
    for oid in sorted(builtin, key=int):
        current = version_of(models / f"{oid}.xml")
        for old in sorted((reg / "version_history").glob(f"{oid}-*_*.xml")):
            major, minor = old.stem.split("-")[1].split("_")
            if f"{major}.{minor}" != current:
                shutil.copyfile(old, models / old.name)
                copied += 1
    print(f"{copied} files copied into {models}")


if __name__ == "__main__":
    main()
