//! SLO rules: error ratios over the SRE Workbook's windows, multiwindow multi-burn-rate alerts with a
//! minimum-traffic guard, and an absent-data alert per SLI.

use tts_gateway::SloConfig;
use tts_gateway::slo::Slo;

use super::alert::{Alert, Severity};
use super::yaml::{Group, Rule};
use super::{RulesError, number};

/// The error-ratio windows recorded for every SLO.
pub(crate) const WINDOWS: [&str; 7] = ["5m", "30m", "1h", "2h", "6h", "1d", "3d"];
/// The SLO period the burn rates are relative to, in hours (30 days).
const PERIOD_HOURS: f64 = 720.0;

/// One burn-rate tier: both windows above `factor` × the error budget, for `for_`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tier {
    pub(crate) name: &'static str,
    pub(crate) severity: Severity,
    pub(crate) long: &'static str,
    pub(crate) short: &'static str,
    pub(crate) factor: f64,
    pub(crate) for_: &'static str,
}

/// SRE Workbook table 5-8 plus its 1d/2h ticket, with kubernetes-mixin's `for:` durations.
pub(crate) const TIERS: [Tier; 4] = [
    Tier {
        name: "page_1h",
        severity: Severity::Critical,
        long: "1h",
        short: "5m",
        factor: 14.4,
        for_: "2m",
    },
    Tier {
        name: "page_6h",
        severity: Severity::Critical,
        long: "6h",
        short: "30m",
        factor: 6.0,
        for_: "15m",
    },
    Tier {
        name: "ticket_1d",
        severity: Severity::Warning,
        long: "1d",
        short: "2h",
        factor: 3.0,
        for_: "1h",
    },
    Tier {
        name: "ticket_3d",
        severity: Severity::Warning,
        long: "3d",
        short: "6h",
        factor: 1.0,
        for_: "3h",
    },
];

/// Every tier that could never fire (factor × budget ≥ 1: the error ratio cannot exceed 1), all at once.
pub(crate) fn check_tiers(config: &SloConfig) -> Result<(), RulesError> {
    let impossible: Vec<String> = Slo::ALL
        .iter()
        .flat_map(|slo| {
            let budget = 1.0 - config.objectives.get(*slo);
            TIERS.iter().filter(move |t| t.factor * budget >= 1.0).map(move |t| {
                format!(
                    "SLO {} tier {} ({}/{} at {}x) can never fire: {} x (1 - {}) >= 1; raise slo.objectives.{}",
                    slo.as_str(),
                    t.name,
                    t.long,
                    t.short,
                    number(t.factor),
                    number(t.factor),
                    number(config.objectives.get(*slo)),
                    slo.as_str()
                )
            })
        })
        .collect();
    if impossible.is_empty() {
        Ok(())
    } else {
        Err(RulesError::ImpossibleTiers(impossible))
    }
}

/// `slo:sli_error:ratio_rate<w>` for every SLO and window, `slo:sli_events:increase<w>` for the long
/// windows (the traffic guard), and `slo:objective:ratio`.
pub(crate) fn recording_group(config: &SloConfig) -> Group {
    let mut rules = Vec::new();
    for slo in Slo::ALL {
        let name = slo.as_str();
        for window in WINDOWS {
            rules.push(
                Rule::record(
                    format!("slo:sli_error:ratio_rate{window}"),
                    format!(
                        "sum(rate(tts_slo_events_total{{slo=\"{name}\",result=\"bad\"}}[{window}]))\n/\nsum(rate(tts_slo_events_total{{slo=\"{name}\"}}[{window}]))"
                    ),
                )
                .label("slo", name),
            );
        }
        for tier in TIERS {
            rules.push(
                Rule::record(
                    format!("slo:sli_events:increase{}", tier.long),
                    format!(
                        "sum(increase(tts_slo_events_total{{slo=\"{name}\"}}[{}]))",
                        tier.long
                    ),
                )
                .label("slo", name),
            );
        }
        rules.push(
            Rule::record(
                "slo:objective:ratio",
                format!("vector({})", number(config.objectives.get(slo))),
            )
            .label("slo", name),
        );
    }
    Group {
        name: "ttsd-slo-sli".into(),
        rules,
    }
}

/// `SLOErrorBudgetBurn` per SLO and tier, and `SLOMetricAbsent` per SLO.
pub(crate) fn alert_group(config: &SloConfig) -> Group {
    let mut rules = Vec::new();
    for slo in Slo::ALL {
        for tier in TIERS {
            rules.push(burn_alert(config, slo, tier));
        }
    }
    for slo in Slo::ALL {
        rules.push(absent_alert(slo));
    }
    Group {
        name: "ttsd-slo-burn".into(),
        rules,
    }
}

fn burn_alert(config: &SloConfig, slo: Slo, tier: Tier) -> Rule {
    let name = slo.as_str();
    let threshold = format!(
        "({} * {})",
        number(tier.factor),
        number(1.0 - config.objectives.get(slo))
    );
    let expr = format!(
        "slo:sli_error:ratio_rate{long}{{slo=\"{name}\"}} > {threshold}\nand\nslo:sli_error:ratio_rate{short}{{slo=\"{name}\"}} > {threshold}\nand\nslo:sli_events:increase{long}{{slo=\"{name}\"}} >= {min}",
        long = tier.long,
        short = tier.short,
        min = config.alert_min_events,
    );
    Alert {
        name: "SLOErrorBudgetBurn",
        expr,
        for_: tier.for_,
        severity: tier.severity,
        labels: vec![
            ("slo", name.to_owned()),
            ("burnrate_tier", tier.name.to_owned()),
            ("long", tier.long.to_owned()),
            ("short", tier.short.to_owned()),
            ("exhaustion", exhaustion(tier.factor)),
        ],
        summary: "An SLO is burning its error budget faster than it can last.",
        description: format!(
            "SLO {{{{ $labels.slo }}}}: {{{{ $value | humanizePercentage }}}} of events were bad over the last {} (and over {}), more than {}x the error budget of {}%; at this rate the 30-day budget is gone in {}. A bad event is {}.",
            tier.long,
            tier.short,
            number(tier.factor),
            number((1.0 - config.objectives.get(slo)) * 100.0),
            exhaustion(tier.factor),
            slo.bad_event()
        ),
    }
    .into_rule()
}

fn absent_alert(slo: Slo) -> Rule {
    let name = slo.as_str();
    Alert {
        name: "SLOMetricAbsent",
        expr: format!("absent(tts_slo_events_total{{slo=\"{name}\"}})"),
        for_: "10m",
        severity: Severity::Warning,
        labels: vec![("slo", name.to_owned())],
        summary: "An SLI has no data, so its SLO cannot be judged.",
        description: format!(
            "No tts_slo_events_total{{slo=\"{name}\"}} series has been scraped for 10 minutes (absent() = {{{{ $value }}}}): the gateways are down or not scraped, and burn-rate alerts for {name} cannot fire."
        ),
    }
    .into_rule()
}

/// How long the 30-day budget lasts at `factor`× the sustainable rate.
fn exhaustion(factor: f64) -> String {
    let hours = PERIOD_HOURS / factor;
    if hours >= 48.0 {
        format!("{}d", (hours / 24.0).round())
    } else {
        format!("{}h", hours.round())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_matches_the_workbook() {
        let got: Vec<String> = TIERS.iter().map(|t| exhaustion(t.factor)).collect();
        assert_eq!(got, ["2d", "5d", "10d", "30d"]);
    }

    #[test]
    fn a_low_objective_makes_the_fast_tiers_impossible_and_every_one_is_named() {
        let config = SloConfig {
            objectives: tts_gateway::slo::Objectives {
                first_audio: 0.9,
                barge_in: 0.5,
                ..Default::default()
            },
            ..SloConfig::default()
        };
        let Err(RulesError::ImpossibleTiers(found)) = check_tiers(&config) else {
            panic!("impossible tiers accepted");
        };
        // 0.9: 14.4 x 0.1 >= 1 (page_1h only). 0.5: 14.4, 6 and 3 x 0.5 >= 1; 1 x 0.5 < 1.
        assert_eq!(found.len(), 4, "{found:#?}");
        assert!(found[0].contains("SLO first_audio tier page_1h"), "{}", found[0]);
        for tier in ["page_1h", "page_6h", "ticket_1d"] {
            assert!(
                found
                    .iter()
                    .any(|f| f.contains(&format!("SLO barge_in tier {tier}"))),
                "{found:#?}"
            );
        }
        assert!(check_tiers(&SloConfig::default()).is_ok());
    }
}
