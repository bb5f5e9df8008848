//! `scitqctl fetch copy|sync|list|delete`: storage URIs from the command line, with the same
//! code (scitq-storage) and the same rclone.conf remotes the agent uses (see
//! [`crate::remotes`] for where they come from). Plain URIs need no server.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use scitq_storage::{Entry, Progress, Storage, TransferReport, Uploaded};

use super::{Context, Exit};
use crate::error::usage;
use crate::output::{self, Format, Listing};
use crate::remotes;

#[derive(Debug, Args)]
pub struct FetchArgs {
    /// rclone.conf naming the storage remotes, used alone: scitqd is not asked [default:
    /// scitqd's remotes, then rclone's own rclone.conf; see `scitqctl fetch --help`]
    #[arg(long, env = "SCITQ_RCLONE_CONFIG", value_name = "FILE", global = true)]
    pub rclone_config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: FetchCommand,
}

#[derive(Debug, Subcommand)]
pub enum FetchCommand {
    /// Copy a file or a folder. With `|actions` after SRC (gunzip, untar, unzip, mv:DIR),
    /// DST must be a local folder and the actions run there
    Copy {
        /// Source URI (s3://, azure://, ftp://, sftp://, http(s)://, file://, REMOTE:path, or a local path)
        src: String,
        /// Destination URI; a trailing / (or an existing folder) keeps the source's name
        dst: String,
    },
    /// Make DST hold what SRC holds: copy what is missing, differs in size or is older
    Sync {
        src: String,
        dst: String,
        /// Also delete what DST holds and SRC does not
        #[arg(long)]
        delete: bool,
    },
    /// List a file or a folder
    List {
        uri: String,
        /// Everything under the folder, not just its first level
        #[arg(short = 'R', long)]
        recursive: bool,
    },
    /// Delete a file, or a folder and everything under it
    Delete { uri: String },
}

impl FetchCommand {
    /// The URIs the command names, to find the remotes they need before anything starts.
    fn uris(&self) -> Vec<&str> {
        match self {
            FetchCommand::Copy { src, dst } | FetchCommand::Sync { src, dst, .. } => {
                vec![src, dst]
            }
            FetchCommand::List { uri, .. } | FetchCommand::Delete { uri } => vec![uri],
        }
    }
}

pub async fn run(args: FetchArgs, ctx: &Context) -> anyhow::Result<Exit> {
    let found = remotes::find(args.rclone_config.as_deref(), &args.command.uris(), || {
        ctx.target()
    })
    .await?;
    let bad_uri = |err| found.explain(err);
    let storage = Storage::new(found.remotes.clone());
    match args.command {
        FetchCommand::Copy { src, dst } => {
            let (_, actions) = storage.parse(&src).map_err(bad_uri)?;
            let dst_loc = storage.location(&dst).map_err(bad_uri)?;
            let bar = Bar::new();
            let report = if actions.is_empty() {
                storage.copy(&src, &dst, &bar).await?
            } else {
                let Some(dir) = dst_loc.local_path() else {
                    return Err(usage(format!(
                        "{dst}: actions after | need a local destination folder"
                    )));
                };
                let paths = storage.download(&src, &dir, &bar).await?;
                TransferReport {
                    copied: paths
                        .iter()
                        .map(|p| Uploaded {
                            uri: format!("file://{}", p.display()),
                            size: std::fs::metadata(p).map(|m| m.len()).unwrap_or(0),
                        })
                        .collect(),
                    ..TransferReport::default()
                }
            };
            bar.done();
            print_report(&report, ctx.format)?;
        }
        FetchCommand::Sync { src, dst, delete } => {
            storage.location(&src).map_err(bad_uri)?;
            storage.location(&dst).map_err(bad_uri)?;
            let bar = Bar::new();
            let report = storage.sync(&src, &dst, delete, &bar).await?;
            bar.done();
            print_report(&report, ctx.format)?;
        }
        FetchCommand::List { uri, recursive } => {
            storage.location(&uri).map_err(bad_uri)?;
            let entries = storage.list(&uri, recursive).await?;
            let rows: Vec<Listed> = entries.into_iter().map(Listed).collect();
            output::print_list(&rows, ctx.format)?;
        }
        FetchCommand::Delete { uri } => {
            storage.location(&uri).map_err(bad_uri)?;
            let count = storage.delete(&uri).await?;
            eprintln!("deleted {count} file(s) under {uri}");
        }
    }
    Ok(0)
}

fn print_report(report: &TransferReport, format: Format) -> anyhow::Result<()> {
    eprintln!(
        "copied {} file(s), {} bytes; {} unchanged; {} deleted",
        report.copied.len(),
        report.bytes(),
        report.skipped,
        report.deleted.len()
    );
    match format {
        Format::Json => output::print_json(report),
        Format::Table => output::print_table(
            &["SIZE", "COPIED TO"],
            report
                .copied
                .iter()
                .map(|c| vec![c.size.to_string(), c.uri.clone()]),
        ),
    }
}

struct Listed(Entry);

impl Listing for Listed {
    type View = Entry;
    const HEADERS: &'static [&'static str] = &["SIZE", "MODIFIED", "PATH"];

    fn view(&self) -> Entry {
        self.0.clone()
    }

    fn row(&self) -> Vec<String> {
        let size = if self.0.is_dir {
            "-".to_string()
        } else {
            self.0.size.to_string()
        };
        let modified = self.0.last_modified.clone().unwrap_or_default();
        vec![size, modified, self.0.path.clone()]
    }
}

/// One byte bar for the whole transfer on stderr (hidden when stderr is not a terminal).
struct Bar(ProgressBar);

impl Bar {
    fn new() -> Bar {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg:30!} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .expect("valid progress template")
            .progress_chars("=> "),
        );
        Bar(bar)
    }

    fn done(&self) {
        self.0.finish_and_clear();
    }
}

impl Progress for Bar {
    fn plan(&self, _files: u64, bytes: u64) {
        self.0.inc_length(bytes);
    }

    fn start(&self, name: &str, _total: Option<u64>) {
        self.0.set_message(name.to_string());
    }

    fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }
}
