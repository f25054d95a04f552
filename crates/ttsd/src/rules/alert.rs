//! The shape every ttsd alert has: a severity, a plain one-sentence summary, a templated description and
//! a runbook in `docs/runbooks/<AlertName>.md`.

use super::yaml::{Kind, Rule};

/// Where the runbooks live, relative to the repository root.
pub(crate) const RUNBOOK_DIR: &str = "docs/runbooks";

/// Alertmanager routes on these (deploy/alertmanager/alertmanager.yml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Severity {
    Warning,
    Critical,
    /// Critical, plus `priority="P0"`: seed 002's "emergency", kept within the three standard severities.
    Emergency,
}

impl Severity {
    fn labels(self) -> Vec<(&'static str, String)> {
        let severity = match self {
            Severity::Warning => "warning",
            Severity::Critical | Severity::Emergency => "critical",
        };
        let mut labels = vec![("severity", severity.to_owned())];
        if self == Severity::Emergency {
            labels.push(("priority", "P0".to_owned()));
        }
        labels
    }
}

/// An alerting rule before it becomes YAML.
#[derive(Debug, Clone)]
pub(crate) struct Alert {
    pub(crate) name: &'static str,
    pub(crate) expr: String,
    pub(crate) for_: &'static str,
    pub(crate) severity: Severity,
    /// Labels besides `severity` (and `priority`).
    pub(crate) labels: Vec<(&'static str, String)>,
    /// One plain sentence, no template.
    pub(crate) summary: &'static str,
    /// What is wrong, with `{{ $value }}` (through a humanize function where it helps).
    pub(crate) description: String,
}

impl Alert {
    pub(crate) fn into_rule(self) -> Rule {
        let labels = self
            .severity
            .labels()
            .into_iter()
            .chain(self.labels)
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        Rule {
            kind: Kind::Alert(self.name.to_owned()),
            expr: self.expr,
            for_: Some(self.for_),
            labels,
            annotations: vec![
                ("summary".into(), self.summary.to_owned()),
                ("description".into(), self.description),
                ("runbook_url".into(), format!("{RUNBOOK_DIR}/{}.md", self.name)),
            ],
        }
    }
}
