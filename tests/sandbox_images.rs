//! `images prepare` against the real engine: present images are left alone, a missing one is
//! pulled or (no registry here) built from Debian packages.

mod sandbox_support;

use sandbox_support::*;
use skill_verifier::package::Runtime;
use skill_verifier::sandbox::images::{prepare, PrepareOptions, Prepared};
use skill_verifier::sandbox::{ImageMap, Policy, Runner};

#[tokio::test]
async fn present_images_are_left_alone() {
    let Some(r) = runner().await else { return };
    let images = Policy::default().images;
    let mut lines = Vec::new();
    let mut progress = |l: &str| lines.push(l.to_string());
    let done = prepare(&r, &images, PrepareOptions::default(), &mut progress)
        .await
        .unwrap();
    assert_eq!(done.len(), 3);
    for image in &done {
        assert_eq!(image.how, Prepared::Present, "{lines:?}");
        assert_eq!(image.digest, r.image_digest(&image.image).await.unwrap());
    }
    assert!(lines.iter().all(|l| l.contains("present")), "{lines:?}");
}

/// The shell recipe is the quick one (one package, no debootstrap): a missing image tagged
/// just for this test is pulled if a registry answers, else built, and then really runs.
#[tokio::test]
async fn a_missing_image_is_built_when_no_registry_answers() {
    let Some(r) = runner().await else { return };
    let tag = format!(
        "skill-verifier/runner-shell-test:{}",
        uuid::Uuid::new_v4().simple()
    );
    let images = ImageMap::from([(Runtime::Shell, tag.clone())]);
    let mut lines = Vec::new();
    let mut progress = |l: &str| lines.push(l.to_string());
    let result = prepare(&r, &images, PrepareOptions::default(), &mut progress).await;
    let done = result.unwrap_or_else(|e| panic!("{e}: {lines:?}"));
    assert_eq!(done[0].how, Prepared::Built, "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("pull failed")), "{lines:?}");

    let inst = instance();
    let mut policy = policy();
    policy.images = images;
    let t = tree(&[]);
    let out = run_in(
        &r,
        &inst,
        Runtime::Shell,
        "id -u; tar --help 2>&1 | head -1",
        Some(20),
        &policy,
        t.path(),
    )
    .await
    .unwrap();
    assert_eq!(out.exit_code, 0);
    assert!(
        text(&out.stdout).starts_with("65534\nBusyBox"),
        "{}",
        text(&out.stdout)
    );
    assert_no_leftovers(&r, &inst).await;

    // This test's own tag only; the shared runner images stay.
    let status = std::process::Command::new("docker")
        .args(["rmi", "-f", &tag])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}
