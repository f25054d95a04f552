//! [`ProfilingConfig`]: what is profiled, where section profiles go, and who may ask for profiles.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Default directory for section profiles, relative to the working directory.
pub const DEFAULT_OUTPUT_DIR: &str = "profiles";
/// Default shortest section that leaves a profile behind.
pub const DEFAULT_MIN_DURATION_MS: u64 = 100;

/// Profiling settings. Everything is off unless `enabled` is true, and then only the cheap parts run until
/// someone asks: sections are sampled while they run, heap sampling runs when `memory` is set.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProfilingConfig {
    /// Master switch for section profiles and the `/debug/pprof/*` admin routes.
    pub enabled: bool,
    /// Where [`profile_section`](crate::profiling::profile_section) writes `<name>_<timestamp>.pb.gz`
    /// and `.svg`.
    pub output_dir: PathBuf,
    /// Sample the CPU while a section runs.
    pub cpu: bool,
    /// Turn on jemalloc heap sampling at startup, so `/debug/pprof/heap` has something to show.
    pub memory: bool,
    /// Sections shorter than this leave no files behind.
    pub min_duration_ms: u64,
    /// Bearer token for the `/debug/pprof/*` routes. Required when the admin listener is not on loopback.
    pub token: Option<String>,
}

impl Default for ProfilingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            output_dir: PathBuf::from(DEFAULT_OUTPUT_DIR),
            cpu: true,
            memory: false,
            min_duration_ms: DEFAULT_MIN_DURATION_MS,
            token: None,
        }
    }
}

/// Shows whether a token is set, never the token.
impl fmt::Debug for ProfilingConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProfilingConfig")
            .field("enabled", &self.enabled)
            .field("output_dir", &self.output_dir)
            .field("cpu", &self.cpu)
            .field("memory", &self.memory)
            .field("min_duration_ms", &self.min_duration_ms)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// One environment variable whose value could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidEnvVar {
    /// The variable's name, e.g. `PROFILE_CPU`.
    pub name: &'static str,
    /// What was wrong with its value.
    pub problem: String,
}

impl fmt::Display for InvalidEnvVar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.problem)
    }
}

impl ProfilingConfig {
    /// Applies `ENABLE_PROFILING`, `PROFILE_OUTPUT_DIR`, `PROFILE_CPU`, `PROFILE_MEMORY`,
    /// `PROFILE_MIN_DURATION_MS` and `PROFILE_TOKEN` from `vars` (pass `std::env::vars()`). Booleans accept
    /// `true`/`1`/`yes` and `false`/`0`/`no`. Every bad variable is reported, not just the first.
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), super::ProfilingError> {
        let mut invalid = Vec::new();
        for (name, value) in vars {
            let (name, result) = match name.as_str() {
                "ENABLE_PROFILING" => ("ENABLE_PROFILING", parse_bool(&value).map(|v| self.enabled = v)),
                "PROFILE_CPU" => ("PROFILE_CPU", parse_bool(&value).map(|v| self.cpu = v)),
                "PROFILE_MEMORY" => ("PROFILE_MEMORY", parse_bool(&value).map(|v| self.memory = v)),
                "PROFILE_OUTPUT_DIR" => ("PROFILE_OUTPUT_DIR", self.set_output_dir(value)),
                "PROFILE_MIN_DURATION_MS" => (
                    "PROFILE_MIN_DURATION_MS",
                    parse_millis(&value).map(|v| self.min_duration_ms = v),
                ),
                "PROFILE_TOKEN" => {
                    self.token = Some(value).filter(|token| !token.is_empty());
                    continue;
                }
                _ => continue,
            };
            if let Err(problem) = result {
                invalid.push(InvalidEnvVar { name, problem });
            }
        }
        if invalid.is_empty() {
            Ok(())
        } else {
            Err(super::ProfilingError::InvalidEnv(invalid))
        }
    }

    fn set_output_dir(&mut self, value: String) -> Result<(), String> {
        if value.trim().is_empty() {
            return Err("is empty".to_owned());
        }
        self.output_dir = PathBuf::from(value);
        Ok(())
    }
}

fn parse_millis(value: &str) -> Result<u64, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("{value:?} is not a whole number of milliseconds (e.g. 100)"))
}

fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!(
            "{value:?} is not a boolean (use true/1/yes or false/0/no)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profiling::ProfilingError;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn applied(pairs: &[(&str, &str)]) -> Result<ProfilingConfig, ProfilingError> {
        let mut config = ProfilingConfig::default();
        config.apply_env(env(pairs)).map(|()| config)
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let config: ProfilingConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config, ProfilingConfig::default());
        assert!(!config.enabled);
        assert_eq!(config.output_dir, PathBuf::from("profiles"));
        assert!(config.cpu);
        assert!(!config.memory);
        assert_eq!(config.min_duration_ms, 100);
        assert_eq!(config.token, None);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let error = serde_json::from_str::<ProfilingConfig>(r#"{"enable": true}"#).unwrap_err();
        assert!(error.to_string().contains("unknown field"), "{error}");
    }

    #[test]
    fn each_variable_sets_its_field() {
        let config = applied(&[
            ("ENABLE_PROFILING", "true"),
            ("PROFILE_OUTPUT_DIR", "/tmp/p"),
            ("PROFILE_CPU", "0"),
            ("PROFILE_MEMORY", "YES"),
            ("PROFILE_MIN_DURATION_MS", "250"),
            ("PROFILE_TOKEN", "s3cret"),
            ("UNRELATED", "whatever"),
        ])
        .unwrap();
        assert_eq!(
            config,
            ProfilingConfig {
                enabled: true,
                output_dir: PathBuf::from("/tmp/p"),
                cpu: false,
                memory: true,
                min_duration_ms: 250,
                token: Some("s3cret".to_owned()),
            }
        );
    }

    #[test]
    fn debug_output_never_shows_the_token() {
        let config = applied(&[("PROFILE_TOKEN", "s3cret")]).unwrap();
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("<redacted>"),
            "{shown}"
        );
    }

    #[test]
    fn every_spelling_of_a_boolean_is_accepted() {
        for (value, expected) in [
            ("true", true),
            ("1", true),
            ("yes", true),
            ("True", true),
            ("false", false),
            ("0", false),
            ("no", false),
        ] {
            let config = applied(&[("ENABLE_PROFILING", value)]).unwrap();
            assert_eq!(config.enabled, expected, "{value}");
        }
    }

    #[test]
    fn bad_values_are_all_reported_by_name() {
        let error = applied(&[
            ("ENABLE_PROFILING", "maybe"),
            ("PROFILE_MIN_DURATION_MS", "fast"),
            ("PROFILE_MEMORY", "on"),
        ])
        .unwrap_err();
        let ProfilingError::InvalidEnv(invalid) = &error else {
            panic!("unexpected error: {error}");
        };
        let names: Vec<_> = invalid.iter().map(|var| var.name).collect();
        assert_eq!(
            names,
            ["ENABLE_PROFILING", "PROFILE_MIN_DURATION_MS", "PROFILE_MEMORY"]
        );
        let message = error.to_string();
        assert!(
            message.contains("ENABLE_PROFILING: \"maybe\" is not a boolean"),
            "{message}"
        );
        assert!(message.contains("PROFILE_MIN_DURATION_MS: \"fast\""), "{message}");
    }

    #[test]
    fn an_empty_output_dir_is_rejected() {
        let error = applied(&[("PROFILE_OUTPUT_DIR", " ")]).unwrap_err();
        assert!(
            error.to_string().contains("PROFILE_OUTPUT_DIR: is empty"),
            "{error}"
        );
    }
}
