//! Where the forward pass runs: `--device cpu|cuda[:N]`.

use std::fmt;
use std::str::FromStr;

/// The device asked for in the config or on the command line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceSpec {
    /// Our CPU SIMD kernels (the fastest CPU path).
    #[default]
    Cpu,
    /// GPU `N` through candle's CUDA backend. Falls back to `Cpu`, with a
    /// warning, when the build has no CUDA or the driver reports no device.
    Cuda(usize),
    /// The CUDA code path (candle tensors) run on the CPU: slower than `Cpu`,
    /// for checking that path on a machine without a GPU.
    CandleCpu,
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            "candle-cpu" => Ok(Self::CandleCpu),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(|| format!("unknown device `{s}`: expected cpu, cuda, cuda:N or candle-cpu")),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::CandleCpu => f.write_str("candle-cpu"),
        }
    }
}

impl<'de> serde::Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// What a [`DeviceSpec`] turned out to be on this machine.
pub(crate) enum Resolved {
    /// Our CPU kernels.
    Kernels,
    /// candle tensors on this device.
    Candle(candle_core::Device),
}

impl DeviceSpec {
    /// Open the device. A CUDA device that cannot be opened (no CUDA in this
    /// build, no driver device, a bad ordinal) falls back to the CPU kernels
    /// with a warning, so a CUDA build still serves on a machine without a GPU.
    pub(crate) fn resolve(self) -> Resolved {
        match self {
            Self::Cpu => Resolved::Kernels,
            Self::CandleCpu => Resolved::Candle(candle_core::Device::Cpu),
            Self::Cuda(n) => match candle_core::Device::new_cuda(n) {
                Ok(dev) => Resolved::Candle(dev),
                Err(e) => {
                    // candle appends a backtrace when RUST_BACKTRACE is set: the first line is the error.
                    let e = e.to_string();
                    let error = e.lines().next().unwrap_or_default();
                    tracing::warn!(device = %self, error, "CUDA device unavailable; running on the CPU");
                    Resolved::Kernels
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_every_form() {
        for (s, d) in [
            ("cpu", DeviceSpec::Cpu),
            ("cuda:0", DeviceSpec::Cuda(0)),
            ("cuda:3", DeviceSpec::Cuda(3)),
            ("candle-cpu", DeviceSpec::CandleCpu),
        ] {
            assert_eq!(s.parse::<DeviceSpec>(), Ok(d));
            assert_eq!(d.to_string(), s);
        }
        assert_eq!("cuda".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
        for bad in ["gpu", "cuda:", "cuda:x", "CUDA"] {
            let err = bad.parse::<DeviceSpec>().expect_err(bad);
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn a_cuda_device_that_cannot_open_falls_back_to_the_cpu_kernels() {
        // No machine has a GPU 999, with or without the cuda feature.
        assert!(matches!(DeviceSpec::Cuda(999).resolve(), Resolved::Kernels));
        assert!(matches!(DeviceSpec::Cpu.resolve(), Resolved::Kernels));
        assert!(matches!(DeviceSpec::CandleCpu.resolve(), Resolved::Candle(candle_core::Device::Cpu)));
    }
}
