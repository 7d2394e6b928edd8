//! iptables rules that cut real traffic on loopback for a test: each is
//! inserted at the head of `OUTPUT` and removed when dropped, so a failing
//! test leaves nothing behind. They need root and iptables: under `CI` both
//! must be there (`.ci/run` installs iptables); elsewhere a test that cannot
//! add its rules says why and skips.

use std::process::Command;

/// Rules in `OUTPUT` (each a match ending in `-j DROP`), removed on drop.
pub struct Rules {
    specs: Vec<Vec<String>>,
}

fn iptables(action: &str, spec: &[String]) -> bool {
    Command::new("iptables")
        .args(["-w", action, "OUTPUT"])
        .args(spec)
        .status()
        .is_ok_and(|s| s.success())
}

impl Rules {
    /// Inserts a rule dropping what matches each `spec` (iptables match
    /// arguments, e.g. `["-o", "lo", "-p", "tcp", "--dport", "4000"]`); `None`,
    /// with none left inserted, when one cannot be inserted. Under `CI` that
    /// fails the test; elsewhere it prints why the test skips.
    pub fn drop_all(specs: &[Vec<String>]) -> Option<Rules> {
        let mut rules = Rules { specs: Vec::new() };
        for spec in specs {
            let mut spec = spec.clone();
            spec.extend(["-j".to_owned(), "DROP".to_owned()]);
            if !iptables("-I", &spec) {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "iptables is needed under CI (run as root; .ci/run installs it)"
                );
                eprintln!("skipping: cannot add an iptables rule (not root, or no iptables)");
                return None;
            }
            rules.specs.push(spec);
        }
        Some(rules)
    }
}

impl Drop for Rules {
    fn drop(&mut self) {
        for spec in &self.specs {
            iptables("-D", spec);
        }
    }
}

/// Owned strings of a spec.
pub fn spec(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}
