//! Building the sandbox report: how a layer's outcome and its configured mode become a
//! [`LayerReport`], and when a `required` layer stops start-up.

use crate::HoundError;
use houndpool_protocol::control::{
    Layer, LayerMode, LayerReport, LayerStatus, SandboxPolicy, SandboxReport,
};

/// Appends layer results to a report according to the policy.
pub(crate) struct Reporter<'a> {
    policy: &'a SandboxPolicy,
    report: &'a mut SandboxReport,
}

impl<'a> Reporter<'a> {
    /// Reports into `report` (which keeps what was appended even when a later layer fails).
    pub(crate) fn new(policy: &'a SandboxPolicy, report: &'a mut SandboxReport) -> Self {
        Reporter { policy, report }
    }

    /// Runs one layer according to its mode and records the outcome.
    ///
    /// `Off`: `apply` is not called, the layer is `Disabled`. Otherwise `apply` returns the
    /// detail of what is enforced, or why the layer is not possible here; `BestEffort` records
    /// the latter as `Unavailable`, `Required` records it and returns
    /// [`HoundError::RequiredLayerUnavailable`]. Returns whether the layer is now enforced.
    pub(crate) fn layer(
        &mut self,
        layer: Layer,
        apply: impl FnOnce() -> Result<String, String>,
    ) -> Result<bool, HoundError> {
        let mode = self.policy.mode(layer);
        if mode == LayerMode::Off {
            self.push(
                layer,
                LayerStatus::Disabled,
                "disabled by configuration".into(),
            );
            return Ok(false);
        }
        match apply() {
            Ok(detail) => {
                self.push(layer, LayerStatus::Enforced, detail);
                Ok(true)
            }
            Err(reason) => {
                self.push(layer, LayerStatus::Unavailable, reason.clone());
                if mode == LayerMode::Required {
                    Err(HoundError::RequiredLayerUnavailable {
                        layer: layer.name(),
                        detail: reason,
                    })
                } else {
                    Ok(false)
                }
            }
        }
    }

    fn push(&mut self, layer: Layer, status: LayerStatus, detail: String) {
        self.report.layers.push(LayerReport {
            layer,
            status,
            detail,
        });
    }
}

/// Renders a report as an aligned text table (`layer  status  detail`, one layer a line, in
/// report order) for logs and `houndd sandbox-check`.
pub fn render_table(report: &SandboxReport) -> String {
    let width = report
        .layers
        .iter()
        .map(|l| l.layer.name().len())
        .max()
        .unwrap_or(0)
        .max("layer".len());
    let mut out = format!("{:<width$}  {:<11}  detail\n", "layer", "status");
    for l in &report.layers {
        out.push_str(&format!(
            "{:<width$}  {:<11}  {}\n",
            l.layer.name(),
            l.status.name(),
            l.detail
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(layers: &[(Layer, LayerMode)]) -> SandboxPolicy {
        SandboxPolicy {
            layers: layers.to_vec(),
        }
    }

    #[test]
    fn off_layers_are_not_applied() {
        let p = policy(&[(Layer::Landlock, LayerMode::Off)]);
        let mut report = SandboxReport::default();
        let mut called = false;
        let enforced = Reporter::new(&p, &mut report)
            .layer(Layer::Landlock, || {
                called = true;
                Ok(String::new())
            })
            .expect("off never fails");
        assert!(!called && !enforced);
        assert_eq!(report.layers[0].status, LayerStatus::Disabled);
    }

    #[test]
    fn best_effort_records_unavailable_and_continues() {
        let p = policy(&[]);
        let mut report = SandboxReport::default();
        let mut r = Reporter::new(&p, &mut report);
        assert!(!r.layer(Layer::Namespaces, || Err("EPERM".into())).unwrap());
        assert!(r.layer(Layer::Landlock, || Ok("ABI 6".into())).unwrap());
        assert_eq!(report.layers.len(), 2);
        assert_eq!(report.layers[0].status, LayerStatus::Unavailable);
        assert_eq!(report.layers[0].detail, "EPERM");
        assert_eq!(report.layers[1].status, LayerStatus::Enforced);
    }

    #[test]
    fn required_failure_is_an_error_and_is_still_reported() {
        let p = policy(&[(Layer::Seccomp, LayerMode::Required)]);
        let mut report = SandboxReport::default();
        let err = Reporter::new(&p, &mut report)
            .layer(Layer::Seccomp, || Err("no seccomp".into()))
            .unwrap_err();
        match err {
            HoundError::RequiredLayerUnavailable { layer, detail } => {
                assert_eq!(layer, "seccomp");
                assert_eq!(detail, "no seccomp");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(report.layers[0].status, LayerStatus::Unavailable);
    }

    #[test]
    fn table_lists_every_layer() {
        let report = SandboxReport {
            layers: vec![
                LayerReport {
                    layer: Layer::FdHygiene,
                    status: LayerStatus::Enforced,
                    detail: "closed 3".into(),
                },
                LayerReport {
                    layer: Layer::Seccomp,
                    status: LayerStatus::Disabled,
                    detail: "off".into(),
                },
            ],
        };
        let table = render_table(&report);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("fd_hygiene  enforced"));
        assert!(lines[2].starts_with("seccomp     disabled"));
        assert!(lines[2].ends_with("off"));
    }
}
