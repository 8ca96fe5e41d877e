//! The runner images really run real test suites, and a long test is not cut by any client
//! timeout.

mod sandbox_support;

use sandbox_support::*;
use skill_verifier::package::Runtime;

const PY_TEST: &str = r#"import unittest

from skill import add


class AddTest(unittest.TestCase):
    def test_adds(self):
        self.assertEqual(add(2, 3), 5)

    def test_writes_tmp(self):
        with open("/tmp/x", "w") as f:
            f.write("ok")


if __name__ == "__main__":
    unittest.main()
"#;

#[tokio::test]
async fn a_python_unittest_suite_runs_and_passes() {
    let Some(r) = runner().await else { return };
    let inst = instance();
    let t = tree(&[
        ("skill.py", "def add(a, b):\n    return a + b\n", false),
        ("tests/__init__.py", "", false),
        ("tests/test_add.py", PY_TEST, false),
    ]);
    let out = run_in(
        &r,
        &inst,
        Runtime::Python,
        "python3 -m unittest discover -v -s tests -t .",
        Some(60),
        &policy(),
        t.path(),
    )
    .await
    .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.exit_code, 0, "stderr: {err}");
    assert!(err.contains("Ran 2 tests"), "{err}");
    assert!(err.trim_end().ends_with("OK"), "{err}");

    // A failing assertion is a failing outcome, not an error.
    let t = tree(&[
        ("skill.py", "def add(a, b):\n    return a - b\n", false),
        ("tests/__init__.py", "", false),
        ("tests/test_add.py", PY_TEST, false),
    ]);
    let out = run_in(
        &r,
        &inst,
        Runtime::Python,
        "python3 -m unittest discover -s tests -t .",
        Some(60),
        &policy(),
        t.path(),
    )
    .await
    .unwrap();
    assert_eq!(out.exit_code, 1);
    assert!(text(&out.stderr).contains("FAILED (failures=1)"));
    assert_no_leftovers(&r, &inst).await;
}

#[tokio::test]
async fn pytest_from_debian_runs_too() {
    let Some(r) = runner().await else { return };
    let inst = instance();
    let t = tree(&[(
        "test_simple.py",
        "def test_one():\n    assert 1 + 1 == 2\n",
        false,
    )]);
    let out = run_in(
        &r,
        &inst,
        Runtime::Python,
        "python3 -m pytest -q -p no:cacheprovider",
        Some(60),
        &policy(),
        t.path(),
    )
    .await
    .unwrap();
    assert_eq!(
        out.exit_code,
        0,
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("1 passed"));
    assert_no_leftovers(&r, &inst).await;
}

#[tokio::test]
async fn a_node_test_suite_runs_and_passes() {
    let Some(r) = runner().await else { return };
    let inst = instance();
    let t = tree(&[
        ("lib.js", "exports.add = (a, b) => a + b;\n", false),
        (
            "test/add.test.js",
            "const test = require('node:test');\nconst assert = require('node:assert');\n\
             const { add } = require('../lib.js');\n\
             test('adds', () => { assert.strictEqual(add(2, 3), 5); });\n\
             test('second', () => { assert.ok(true); });\n",
            false,
        ),
    ]);
    let out = run_in(
        &r,
        &inst,
        Runtime::Node,
        "node --test",
        Some(60),
        &policy(),
        t.path(),
    )
    .await
    .unwrap();
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.exit_code, 0, "{all}");
    assert!(all.contains("# pass 2"), "{all}");
    assert!(all.contains("# fail 0"), "{all}");
    assert_no_leftovers(&r, &inst).await;
}

/// Longer than bollard's default 120 s request timeout and the attach/wait streams it does
/// not cover: the run must end on its own terms.
#[tokio::test]
async fn a_test_longer_than_120_s_is_not_cut_by_a_client_timeout() {
    let Some(r) = runner().await else { return };
    let inst = instance();
    let out = sh(&r, &inst, "echo begin; sleep 125; echo end", Some(200)).await;
    assert_eq!(out.exit_code, 0, "{out:?}");
    assert!(!out.timed_out);
    assert!(out.duration_ms >= 125_000);
    assert_eq!(text(&out.stdout), "begin\nend\n");
    assert_no_leftovers(&r, &inst).await;
}
