"""``touchpulse catalogue diff``: a change told in the catalogue's terms, not the text's."""

from __future__ import annotations

from pathlib import Path

from tests.scoring.catalogue_tools.support import BASE, mutate, run, run_json, touchpulse, write

CANDIDATE_EDITS = (
    ('version: "2026.01.1"', 'version: "2026.02.1"'),
    ("  survey: 0.5\n", "  survey: 1.0\n"),
    ("required: [csat]", "required: [csat, nps]"),
    ("green_from: 75", "green_from: 80"),
    ("    threshold: 50\n", "    threshold: 45\n"),
    ("[reached_and_fixed, compensated]", "[reached_and_fixed, compensated, refunded]"),
    ('expect: {op: "<=", target: 60}', 'expect: {op: "<=", target: 45}'),
    ("tolerance: 540", "tolerance: 300"),
    ("    weight: 1.0\n", "    weight: 2\n"),
    ("premium: {target: 30, tolerance: 270}", "premium: {target: 20, tolerance: 270}"),
    ("      premium: {within_hours: 24}", "      gold: {tolerance: 12}"),
    ("    critical_at: 2\n", "    critical_at: 1\n"),
    # call-resolved removed, delivery-undamaged added
    (
        """  - id: call-resolved
    touchpoint: call_centre
    event_type: call.answered
    measure: resolved
    expect: {op: "==", target: true}
    weight: 1.5
    action: Follow up
    description: Solved in the first call
""",
        """  - id: delivery-undamaged
    touchpoint: delivery
    event_type: delivery.completed
    measure: damaged
    expect: {op: "==", target: false}
    severity: critical
    action: Replace the goods
    description: It arrives whole
""",
    ),
)


def candidate() -> str:
    text = BASE
    for old, new in CANDIDATE_EDITS:
        text = mutate(text, old, new)
    return text


def test_every_change_is_reported_exactly(tmp_path: Path) -> None:
    old, new = write(tmp_path, "old.yaml", BASE), write(tmp_path, "new.yaml", candidate())
    code, report = run_json("diff", old, new)
    assert code == 1
    assert report["identical"] is False
    assert report["version"] == {"old": "2026.01.1", "new": "2026.02.1"}
    assert (report["old"]["version"], report["new"]["version"]) == ("2026.01.1", "2026.02.1")
    promises = report["promises"]
    assert [p["id"] for p in promises["removed"]] == ["call-resolved"]
    assert promises["added"] == [
        {
            "id": "delivery-undamaged",
            "touchpoint": "delivery",
            "event_type": "delivery.completed",
            "measure": "damaged",
            "expect": {"op": "==", "target": False},
            "weight": 1.0,
            "severity": "critical",
            "segments": {},
            "action": "Replace the goods",
            "description": "It arrives whole",
        }
    ]
    assert promises["changed"] == {
        "call-answer-time": [
            {"field": "expect.target", "old": 60.0, "new": 45.0},
            {"field": "tolerance", "old": 540.0, "new": 300.0},
            {"field": "weight", "old": 1.0, "new": 2.0},
            {"field": "segments.premium.target", "old": 30.0, "new": 20.0},
        ],
        "delivery-within-48h": [
            {"field": "segments.gold.tolerance", "old": None, "new": 12.0},
            {"field": "segments.premium.within_hours", "old": 24.0, "new": None},
        ],
        "survey-csat": [{"field": "critical_at", "old": 2.0, "new": 1.0}],
    }
    assert report["policy"] == [
        {"field": "policy.bands.green_from", "old": 75.0, "new": 80.0},
        {"field": "policy.interventions.threshold", "old": 50.0, "new": 45.0},
        {
            "field": "policy.interventions.resolution_categories",
            "old": ["reached_and_fixed", "compensated"],
            "new": ["reached_and_fixed", "compensated", "refunded"],
        },
    ]
    assert report["touchpoints"] == [{"field": "touchpoints.survey", "old": 0.5, "new": 1.0}]
    assert report["events"] == [
        {
            "field": "events.survey['survey.answered'].required",
            "old": ["csat"],
            "new": ["csat", "nps"],
        }
    ]


def test_the_table_reads_as_the_catalogue_does(tmp_path: Path) -> None:
    old, new = write(tmp_path, "old.yaml", BASE), write(tmp_path, "new.yaml", candidate())
    code, out, _ = run("diff", old, new)
    assert code == 1
    assert out.splitlines() == [
        f"--- {old} (version 2026.01.1)",
        f"+++ {new} (version 2026.02.1)",
        "promises: 1 added, 1 removed, 3 changed; 3 policy changes; 1 touchpoint change;"
        " 1 tracking-plan change",
        "version  2026.01.1 → 2026.02.1",
        "promises added:",
        "  + delivery-undamaged  delivery: delivery.completed damaged == false",
        "promises removed:",
        "  - call-resolved       call_centre: call.answered resolved == true",
        "promises changed:",
        "  ~ call-answer-time",
        "      expect.target            60 → 45",
        "      tolerance                540 → 300",
        "      weight                   1 → 2",
        "      segments.premium.target  30 → 20",
        "  ~ delivery-within-48h",
        "      segments.gold.tolerance        (none) → 12",
        "      segments.premium.within_hours  24 → (none)",
        "  ~ survey-csat",
        "      critical_at  2 → 1",
        "policy:",
        "    policy.bands.green_from                     75 → 80",
        "    policy.interventions.threshold              50 → 45",
        "    policy.interventions.resolution_categories  [reached_and_fixed, compensated]"
        " → [reached_and_fixed, compensated, refunded]",
        "touchpoints:",
        "    touchpoints.survey  0.5 → 1",
        "tracking plan (events):",
        "    events.survey['survey.answered'].required  [csat] → [csat, nps]",
    ]


def _same_catalogue_other_text() -> str:
    """BASE reordered, recommented, in block style, with a default stated: the same promises."""
    text = mutate(
        BASE,
        "  call_centre: 1.0\n  delivery: 1.5\n",
        "  delivery: 1.5     # moved\n  call_centre: 1\n",
    )
    text = mutate(
        text, "  half_life_days: 30\n", "  half_life_days: 30\n  weakest_link_lambda: 0.5\n"
    )
    text = mutate(text, "bands: {amber_from: 50, green_from: 75}", "bands:\n    green_from: 75")
    head, promises = text.split("promises:\n")
    first, second, *rest = promises.split("  - id: ")
    return head + "promises:\n" + "  - id: ".join([first, *rest, second.rstrip("\n") + "\n"])


def test_the_same_promises_in_other_words_are_identical(tmp_path: Path) -> None:
    other = _same_catalogue_other_text()
    assert other != BASE
    old, new = write(tmp_path, "old.yaml", BASE), write(tmp_path, "new.yaml", other)
    assert run("diff", old, new)[:2] == (0, "")
    code, report = run_json("diff", old, new)
    assert code == 0
    assert report["identical"] is True
    assert report["version"] is None
    assert report["promises"] == {"added": [], "removed": [], "changed": {}}
    assert report["policy"] == report["touchpoints"] == report["events"] == []
    assert report["old"]["sha256"] != report["new"]["sha256"]


def test_a_version_bump_alone_is_a_difference(tmp_path: Path) -> None:
    bumped = mutate(BASE, 'version: "2026.01.1"', 'version: "2026.01.2"')
    old, new = write(tmp_path, "old.yaml", BASE), write(tmp_path, "new.yaml", bumped)
    code, out, _ = run("diff", old, new)
    assert code == 1
    assert out.splitlines()[2:] == [
        "promises: 0 added, 0 removed, 0 changed; 0 policy changes; 0 touchpoint changes;"
        " 0 tracking-plan changes",
        "version  2026.01.1 → 2026.01.2",
    ]


def test_a_change_without_a_version_bump_says_so(tmp_path: Path) -> None:
    changed = mutate(BASE, "tolerance: 540", "tolerance: 300")
    old, new = write(tmp_path, "old.yaml", BASE), write(tmp_path, "new.yaml", changed)
    code, out, _ = run("diff", old, new)
    assert code == 1
    assert "version  2026.01.1, unchanged: bump it for this change" in out.splitlines()


def test_an_invalid_file_is_refused_with_its_problems_as_check_gives_them(tmp_path: Path) -> None:
    broken = mutate(BASE, "    weight: 1.0\n", "    weight: 1.0\n    colour: blue\n")
    broken = mutate(broken, "    threshold: 50\n", "    threshold: 150\n")
    old, new = write(tmp_path, "old.yaml", BASE), write(tmp_path, "new.yaml", broken)
    code, out, err = run("diff", old, new)
    assert code == 2
    assert out == ""
    _, check_out, _ = run("check", new)
    assert err == check_out
    code, report = run_json("diff", new, old)
    assert code == 2
    assert [(r["file"], r["valid"], len(r["problems"])) for r in report] == [(str(new), False, 2)]


def test_the_touchpulse_command_diffs_like_diff1(tmp_path: Path) -> None:
    """Through the real console script: exit 1 and the table when the files differ."""
    old, new = write(tmp_path, "old.yaml", BASE), write(tmp_path, "new.yaml", candidate())
    done = touchpulse("catalogue", "diff", old, new)
    assert done.returncode == 1, done.stderr
    assert "  ~ call-answer-time" in done.stdout.splitlines()
    assert "      expect.target            60 → 45" in done.stdout.splitlines()
