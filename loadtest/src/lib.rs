//! Load generator for scalable-api: the standard workloads (docs/benchmarks.md), one run or a
//! comparison across the settings of a knob (the cache strategy), against a hello-world
//! baseline, with a report (Markdown table, JSON, SVG chart).
//!
//! - [`target`]: the one address a test may hit (loopback unless allowed) and its client;
//! - [`engine`]: the closed-loop load and its raw figures;
//! - [`series`]: the same figures per second, the service's health over time, a row per fault;
//! - [`faults`]: the fault timeline (`--fault`) and the stack controls that apply it;
//! - [`timeline`], [`timechart`]: a run with faults, its report (a row per fault) and chart;
//! - [`workload`]: what each standard workload sends, and the ids it draws from;
//! - [`metrics`]: SQL statements and cache hits from the service's `/metrics`;
//! - [`process`]: starting and stopping the service and the baseline per run;
//! - [`compare`]: one measured run, and the comparison loop;
//! - [`server_timing`]: the service's `Server-Timing` headers, summed per metric;
//! - [`report`]: the table, JSON and chart;
//! - [`hello`]: the hello-world axum server that sets the ceiling.

pub mod compare;
pub mod engine;
pub mod faults;
pub mod hello;
pub mod metrics;
pub mod process;
pub mod report;
pub mod series;
pub mod server_timing;
pub mod target;
pub mod timechart;
pub mod timeline;
pub mod workload;
