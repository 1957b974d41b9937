"""`tagstream import profiles FILE.csv` against the real broker."""

from __future__ import annotations

import pytest

from services.common.topics import PROFILE_UPDATES
from tests.collector_support import read_records
from tests.helpers import tagstream

CSV = """external_user_id,email,first_name,age:number,vip:boolean,signup:date,notes
u-1,ann@example.com,Ann,31,yes,2024-02-29,hello
u-2,,Bob,thirty,no,2024-03-01,
,,Nobody,40,true,2024-03-02,
u-4,dee@example.com,"Dee, Jr.",52.5,false,2024-03-03T10:00:00Z,"multi
line note"
u-5,,Eve,29,maybe,2024-03-04,
"""


@pytest.mark.integration
def test_csv_rows_become_typed_profile_updates_and_bad_rows_are_listed(settings, env, tmp_path):
    """Valid rows are produced with typed attributes; bad rows are reported by line and column."""
    path = tmp_path / "people.csv"
    path.write_text(CSV)
    result = tagstream("import", "profiles", str(path), env=env)
    assert result.returncode == 1, result.stderr
    assert f"rejected {path}:3: column 'age:number' (number)" in result.stderr
    assert f"rejected {path}:4: no identifier" in result.stderr
    assert f"rejected {path}:7: column 'vip:boolean' (boolean)" in result.stderr
    assert "imported 2 profiles" in result.stderr and "rejected 3 rows" in result.stderr

    records = {r["identity"]["external_user_id"]: r for r in read_records(settings, PROFILE_UPDATES, 2)}
    assert set(records) == {"u-1", "u-4"}
    assert records["u-1"]["identity"]["email"] == "ann@example.com"
    assert {a["name"]: (a["type"], a["value"]) for a in records["u-1"]["attributes"]} == {
        "first_name": ("string", "Ann"),
        "age": ("number", "31"),
        "vip": ("boolean", "true"),
        "signup": ("date", "2024-02-29"),
        "notes": ("string", "hello"),
    }
    u4 = {a["name"]: a["value"] for a in records["u-4"]["attributes"]}
    assert (u4["first_name"], u4["age"], u4["signup"], u4["notes"]) == (
        "Dee, Jr.",
        "52.5",
        "2024-03-03T10:00:00.000Z",
        "multi\nline note",
    )


@pytest.mark.integration
def test_a_mapping_file_renames_types_and_skips_columns(settings, env, tmp_path):
    """Columns are mapped by a YAML file: to identifiers, typed attributes, or skipped."""
    path = tmp_path / "crm.csv"
    path.write_text("Customer ID,Monthly GB,Internal\nc-9,182.5,secret\n")
    mapping = tmp_path / "map.yaml"
    mapping.write_text(
        "columns:\n  Customer ID: external_user_id\n  Monthly GB: monthly_usage_gb:number\n  Internal: skip\n"
    )
    result = tagstream("import", "profiles", str(path), "--mapping", str(mapping), env=env)
    assert result.returncode == 0, result.stderr
    [record] = read_records(settings, PROFILE_UPDATES, 1)
    assert record["identity"]["external_user_id"] == "c-9"
    assert record["attributes"] == [
        {"name": "monthly_usage_gb", "type": "number", "value": "182.5", "scope": "person"}
    ]
    no_id = tmp_path / "noid.csv"
    no_id.write_text("name\nAnn\n")
    refused = tagstream("import", "profiles", str(no_id), env=env)
    assert refused.returncode == 1 and "no identifier column" in refused.stderr
