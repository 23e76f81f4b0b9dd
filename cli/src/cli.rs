//! The command line: arguments, and what each subcommand prints and exits with.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::cluster::{self, Depth, Scope};
use crate::inputs::read_inputs;
use crate::migrate::{self, AnnotationVerdict, Migration, SourceDocument};

/// Exit status: everything done, nothing to report.
pub const EXIT_OK: u8 = 0;
/// Exit status: done, but the result is incomplete or the cluster has findings.
pub const EXIT_FINDINGS: u8 = 1;
/// Exit status: could not do it (bad input, no cluster); nothing was written.
pub const EXIT_ERROR: u8 = 2;

/// Herald's operator tool: move from MetalLB, see who announces what, check a cluster.
#[derive(Parser, Debug)]
#[command(version, about)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Convert MetalLB IPAddressPool and L2Advertisement objects to Herald's.
    ///
    /// Reads YAML (files, directories or standard input; several documents and `kind: List`
    /// allowed) and writes Herald's objects. Whatever has no equivalent (BGP objects, fields
    /// Herald lacks) is reported on standard error with the object and the field. Services in
    /// the input are listed with what Herald makes of their MetalLB annotations.
    ///
    /// Exit status: 0 complete, 1 written but incomplete (see the report), 2 bad input
    /// (nothing written).
    Migrate {
        /// Input files or directories; `-` or none reads standard input.
        paths: Vec<PathBuf>,
        /// Write Herald's objects here instead of standard output.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
    },
    /// Who announces each allocated IP, pool usage, and each node's speaker.
    ///
    /// Per IP: its Services, pool, announcing node and interface, since when, and the last
    /// change of announcing node. Per pool: usage. Per node: whether its speaker is a member,
    /// has quorum and can answer. Read from the API only (Service conditions, Events, Leases,
    /// pool status, and the speakers' metrics through the API server's pod proxy where it
    /// reaches them).
    Status {
        /// Only Services of this namespace (default: all).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
        /// Print again whenever something changes.
        #[arg(short = 'w', long)]
        watch: bool,
        /// Seconds between reads with --watch.
        #[arg(long, default_value_t = 2)]
        interval: u64,
        /// Where Herald runs.
        #[command(flatten)]
        scope: Scope,
    },
    /// Pre-flight checks of a cluster for Herald, each finding with what to do.
    ///
    /// kube-proxy's mode (IPVS needs strictARP), pools overlapping node addresses, pod or
    /// Service CIDRs, advertisements that select no node and pools no advertisement covers,
    /// the membership Secret, a Ready speaker on every eligible node, a controller leader.
    ///
    /// Exit status: 0 no errors (warnings allowed), 1 errors found, 2 could not check.
    Check {
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Format::Table)]
        output: Format,
        /// Where Herald runs.
        #[command(flatten)]
        scope: Scope,
    },
}

/// How `status` and `check` print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

fn print_as<T: serde::Serialize>(
    value: &T,
    format: Format,
    table: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    let text = match format {
        Format::Table => table(),
        Format::Json => serde_json::to_string_pretty(value)? + "\n",
        Format::Yaml => serde_yaml::to_string(value)?,
    };
    std::io::stdout().write_all(text.as_bytes())?;
    std::io::stdout().flush()?;
    Ok(())
}

async fn client() -> anyhow::Result<kube::Client> {
    kube::Client::try_default()
        .await
        .map_err(|e| anyhow::anyhow!("no cluster to talk to (KUBECONFIG or in-cluster): {e}"))
}

async fn run_status(
    namespace: Option<String>,
    format: Format,
    watch: bool,
    interval: u64,
    scope: Scope,
) -> anyhow::Result<u8> {
    let client = client().await?;
    let mut last = None;
    loop {
        let snapshot =
            cluster::snapshot(&client, &scope, namespace.as_deref(), Depth::Status).await?;
        let now = k8s_openapi::jiff::Timestamp::now();
        let report = crate::status::build(&snapshot, now);
        if last.as_ref() != Some(&report) {
            if watch && last.is_some() && format != Format::Table {
                // One document per change, so the stream stays parseable.
                if format == Format::Yaml {
                    std::io::stdout().write_all(b"---\n")?;
                }
            } else if watch && last.is_some() {
                println!();
            }
            print_as(&report, format, || {
                crate::status::render_table(&report, now)
            })?;
            last = Some(report);
        }
        if !watch {
            return Ok(EXIT_OK);
        }
        tokio::time::sleep(std::time::Duration::from_secs(interval.max(1))).await;
    }
}

async fn run_check(format: Format, scope: Scope) -> anyhow::Result<u8> {
    let client = client().await?;
    let snapshot = cluster::snapshot(&client, &scope, None, Depth::Check).await?;
    let findings = crate::check::run(&snapshot, &scope, k8s_openapi::jiff::Timestamp::now());
    print_as(&findings, format, || crate::check::render_table(&findings))?;
    let errors = findings
        .iter()
        .any(|f| f.level == crate::check::Level::Error);
    Ok(if errors { EXIT_FINDINGS } else { EXIT_OK })
}

fn block_on(work: impl std::future::Future<Output = anyhow::Result<u8>>) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return EXIT_ERROR;
        }
    };
    match runtime.block_on(work) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            EXIT_ERROR
        }
    }
}

/// Runs the tool as `name` (`herald` or `kubectl herald`).
pub fn main(name: &'static str) -> ExitCode {
    let args = Args::parse_from(
        std::iter::once(std::ffi::OsString::from(name)).chain(std::env::args_os().skip(1)),
    );
    let code = match args.command {
        Command::Migrate { paths, output } => run_migrate(&paths, output.as_deref()),
        Command::Status {
            namespace,
            output,
            watch,
            interval,
            scope,
        } => block_on(run_status(namespace, output, watch, interval, scope)),
        Command::Check { output, scope } => block_on(run_check(output, scope)),
    };
    ExitCode::from(code)
}

fn run_migrate(paths: &[PathBuf], output: Option<&std::path::Path>) -> u8 {
    let migration = read_inputs(paths)
        .map_err(|e| format!("{e:#}"))
        .and_then(|inputs| {
            let mut documents: Vec<SourceDocument> = Vec::new();
            for input in inputs {
                documents.extend(
                    migrate::parse_documents(&input.name, &input.text)
                        .map_err(|e| e.to_string())?,
                );
            }
            migrate::migrate(&documents).map_err(|e| e.to_string())
        });
    let migration = match migration {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!("nothing was written");
            return EXIT_ERROR;
        }
    };
    let yaml = match migration.to_yaml() {
        Ok(y) => y,
        Err(e) => {
            eprintln!("error: serializing the result: {e}");
            return EXIT_ERROR;
        }
    };
    let written = match output {
        Some(path) => {
            std::fs::write(path, &yaml).map_err(|e| format!("writing {}: {e}", path.display()))
        }
        None => std::io::stdout()
            .write_all(yaml.as_bytes())
            .map_err(|e| format!("writing standard output: {e}")),
    };
    if let Err(e) = written {
        eprintln!("error: {e}");
        return EXIT_ERROR;
    }
    eprint!("{}", migration_report(&migration));
    if migration.is_complete() {
        EXIT_OK
    } else {
        EXIT_FINDINGS
    }
}

/// The report on standard error: findings, Services, and the verdict.
pub fn migration_report(m: &Migration) -> String {
    let mut out = String::new();
    for finding in &m.findings {
        out.push_str(&format!("{finding}\n"));
    }
    for service in &m.services {
        for (key, verdict) in &service.annotations {
            let line = match verdict {
                AnnotationVerdict::Honoured => "honoured as it is".to_string(),
                AnnotationVerdict::HonouredDeprecated { rename_to } => format!(
                    "honoured as it is, with a DeprecatedAnnotation Warning Event; rename it to {rename_to}"
                ),
                AnnotationVerdict::Ignored { why } => format!("ignored: {why}"),
                AnnotationVerdict::Unsupported => {
                    "not migrated: Herald does not read this annotation".to_string()
                }
            };
            out.push_str(&format!("Service {}: {key}: {line}\n", service.service));
        }
    }
    let pools = m
        .objects
        .iter()
        .filter(|o| o["kind"] == "IPAddressPool")
        .count();
    let ads = m.objects.len() - pools;
    out.push_str(&format!(
        "{pools} IPAddressPool(s) and {ads} L2Advertisement(s) written; {}\n",
        if m.is_complete() {
            "the migration is complete"
        } else {
            "the migration is INCOMPLETE: see the lines above"
        }
    ));
    out
}
