//! Every example scenario parses and plans; a bad file is refused with the field and line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use orelay_loadgen::schedule::{self, Shard};
use orelay_loadgen::spec;

#[test]
fn every_example_scenario_parses_and_plans() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let s = spec::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            !s.thresholds.is_empty(),
            "{}: examples state their thresholds",
            path.display()
        );
        let plan = schedule::build(&s, Shard::ALL);
        assert!(plan.participants() >= 2 * s.meetings, "{}", path.display());
        assert!(plan.expected(&s).joins >= plan.participants() as u64);
        seen += 1;
    }
    assert!(seen >= 6, "only {seen} example scenarios");
    let attackers = spec::load(&dir.join("storm-with-attackers.toml")).unwrap();
    assert_eq!(
        attackers.pending.len(),
        1,
        "host actions are reported as not run"
    );
    let a = attackers.attackers.unwrap();
    assert_eq!((a.sources, a.rate), (4, 20.0));
}

#[test]
fn a_bad_file_names_the_field_and_line() {
    let dir = std::env::temp_dir().join(format!("loadgen-spec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "name = \"bad\"\n\n[media]\naudio_pps = 20\ncamera_on = 1.5\n",
    )
    .unwrap();
    let e = spec::load(&path).unwrap_err();
    assert_eq!(e.line, 5, "{e}");
    assert!(e.to_string().contains("camera_on"), "{e}");
    assert!(e.to_string().contains("bad.toml: line 5"), "{e}");
    std::fs::write(
        &path,
        "[arrival]\nshape = \"storm\"\nwindow = \"1s\"\nchurn = 3\n",
    )
    .unwrap();
    let e = spec::load(&path).unwrap_err();
    assert_eq!(e.line, 4, "{e}");
    assert!(e.message.contains("churn"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
