//! SARIF 2.1.0 output (for GitHub code scanning and any SARIF viewer), built with the typed
//! model of `serde-sarif`.
//!
//! - One run, tool `skill-verifier` with every rule of the pack and every native check as
//!   `rules[]` (id, short description, category and severity in `properties`, and GitHub's
//!   numeric `security-severity`).
//! - Levels: a finding the policy blocks is `error`; a recorded `medium`/`high`/`critical`
//!   finding is `warning`; the rest `note`.
//! - Artifact URIs are relative (`uriBaseId: %SRCROOT%`), optionally under a prefix: the skill
//!   folder's path inside the repository being scanned.

use std::collections::BTreeMap;

use serde_sarif::sarif;

use super::{native, Action, Finding, Policy, RulePack, Severity};

/// GitHub's `security-severity` score for a severity (its bands: >= 9 critical, >= 7 high,
/// >= 4 medium, else low).
fn security_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "3.0",
        Severity::Info => "1.0",
    }
}

struct RuleDoc {
    code: String,
    category: &'static str,
    severity: Severity,
    message: String,
}

fn rule_docs(pack: &RulePack) -> Vec<RuleDoc> {
    let mut docs: Vec<RuleDoc> = pack
        .rules()
        .map(|r| RuleDoc {
            code: r.code.clone(),
            category: r.category.as_str(),
            severity: r.severity,
            message: r.message.clone(),
        })
        .collect();
    docs.extend(
        native::NATIVE_RULES
            .iter()
            .map(|(c, cat, sev, msg)| RuleDoc {
                code: (*c).to_string(),
                category: cat.as_str(),
                severity: *sev,
                message: (*msg).to_string(),
            }),
    );
    docs
}

fn properties(pairs: &[(&str, serde_json::Value)], tags: Vec<String>) -> sarif::PropertyBag {
    let extra: BTreeMap<String, serde_json::Value> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_string(), v.clone()))
        .collect();
    sarif::PropertyBag::builder()
        .tags(tags)
        .additional_properties(extra)
        .build()
}

/// Renders `findings` as a SARIF log. `prefix` is prepended to every path (e.g. the skill's
/// folder inside a repository, with a trailing `/`), so code scanning can place results.
pub fn to_sarif(
    findings: &[Finding],
    pack: &RulePack,
    policy: &Policy,
    prefix: &str,
) -> sarif::Sarif {
    let docs = rule_docs(pack);
    let mut index: BTreeMap<&str, i64> = BTreeMap::new();
    let mut rules = Vec::new();
    for f in findings {
        if index.contains_key(f.code.as_str()) {
            continue;
        }
        let doc = docs.iter().find(|d| d.code == f.code);
        let (category, severity, text) = match doc {
            Some(d) => (d.category, d.severity, d.message.clone()),
            None => (f.category.as_str(), f.severity, f.message.clone()),
        };
        index.insert(f.code.as_str(), rules.len() as i64);
        rules.push(
            sarif::ReportingDescriptor::builder()
                .id(f.code.clone())
                .name(f.code.clone())
                .short_description(
                    sarif::MultiformatMessageString::builder()
                        .text(text)
                        .build(),
                )
                .properties(properties(
                    &[
                        ("category", category.into()),
                        ("severity", severity.as_str().into()),
                        ("security-severity", security_severity(severity).into()),
                    ],
                    vec!["security".to_string(), category.to_string()],
                ))
                .build(),
        );
    }
    let results: Vec<sarif::Result> = findings
        .iter()
        .map(|f| {
            let level = if policy.action(f) == Action::Block {
                sarif::ResultLevel::Error
            } else if f.severity >= Severity::Medium {
                sarif::ResultLevel::Warning
            } else {
                sarif::ResultLevel::Note
            };
            let path = if f.path.is_empty() {
                "SKILL.md"
            } else {
                &f.path
            };
            let artifact = sarif::ArtifactLocation::builder()
                .uri(format!("{prefix}{path}"))
                .uri_base_id("%SRCROOT%")
                .build();
            let physical = match f.line {
                Some(line) => sarif::PhysicalLocation::builder()
                    .artifact_location(artifact)
                    .region(
                        sarif::Region::builder()
                            .start_line(line as i64)
                            .snippet(
                                sarif::ArtifactContent::builder()
                                    .text(f.excerpt.clone())
                                    .build(),
                            )
                            .build(),
                    )
                    .build(),
                None => sarif::PhysicalLocation::builder()
                    .artifact_location(artifact)
                    .build(),
            };
            sarif::Result::builder()
                .rule_id(f.code.clone())
                .rule_index(index[f.code.as_str()])
                .level(level)
                .message(sarif::Message::builder().text(f.message.clone()).build())
                .locations(vec![sarif::Location::builder()
                    .physical_location(physical)
                    .build()])
                .properties(properties(
                    &[
                        ("category", f.category.as_str().into()),
                        ("severity", f.severity.as_str().into()),
                    ],
                    vec![],
                ))
                .build()
        })
        .collect();
    let driver = sarif::ToolComponent::builder()
        .name("skill-verifier")
        .semantic_version(crate::VERSION.to_string())
        .information_uri("https://skill-verifier.dev/")
        .rules(rules)
        .build();
    let run = sarif::Run::builder()
        .tool(sarif::Tool::builder().driver(driver).build())
        .results(results)
        .properties(properties(
            &[
                ("policy", policy.name.clone().into()),
                ("policy_sha256", policy.sha256().to_hex().into()),
                ("rules_sha256", pack.sha256().to_hex().into()),
            ],
            vec![],
        ))
        .build();
    sarif::Sarif::builder()
        .schema(sarif::SCHEMA_URL.to_string())
        .version(serde_json::json!(sarif::Version::V2_1_0.to_string()))
        .runs(vec![run])
        .build()
}

/// [`to_sarif`] as pretty JSON bytes.
pub fn to_sarif_json(
    findings: &[Finding],
    pack: &RulePack,
    policy: &Policy,
    prefix: &str,
) -> Vec<u8> {
    serde_json::to_vec_pretty(&to_sarif(findings, pack, policy, prefix)).expect("SARIF serializes")
}
