//! The command line: clap derive definitions only. Subcommands are verbs; global options are
//! also readable from `SPUTNIK_*` environment variables. What each command does lives in
//! `commands/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::search::SearchMode;
use crate::store::Role;

/// Exit codes, documented in `--help` and the README.
pub mod exit {
    pub const OK: i32 = 0;
    /// An internal failure: the data directory, a disk, a bug.
    pub const FAILURE: i32 = 1;
    /// A mistake in what was asked: bad flags, bad config, unknown document.
    pub const USAGE: i32 = 2;
    /// The command ran, but some inputs failed (for example files an import could not read).
    pub const PARTIAL: i32 = 3;
}

#[derive(Debug, Parser)]
#[command(
    name = "sputnik",
    version,
    about = "On-prem employee companion: answers from company documents, in Russian and English, with sources — in Telegram and the terminal",
    after_help = "Exit codes: 0 success, 1 internal failure, 2 usage or configuration error, \
                  3 finished but some inputs failed.\n\
                  Configuration: defaults < config file < SPUTNIK_* environment < flags."
)]
pub struct Cli {
    /// Configuration file (default: /etc/sputnik/sputnik.toml when it exists).
    #[arg(long, global = true, env = "SPUTNIK_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Directory holding the store and indexes [config: data_dir].
    #[arg(long, global = true, env = "SPUTNIK_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Import documents (Markdown, text, HTML, PDF, DOCX, ODT) from files and directories.
    Import(ImportArgs),
    /// Search the knowledge base.
    Search(SearchArgs),
    /// List, show and remove imported documents.
    #[command(subcommand)]
    Docs(DocsCommand),
    /// Rebuild the search indexes from the store.
    Reindex(ReindexArgs),
    /// Show document, chunk and index counts and sizes.
    Stats(JsonFlag),
    /// Measure retrieval quality on a question set (JSON lines).
    Eval(EvalArgs),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Invite and manage employees.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Onboarding plans (TOML files, see docs/onboarding.md): import, list, show.
    #[command(subcommand)]
    Plans(PlansCommand),
    /// Onboarding progress of new hires.
    #[command(subcommand)]
    Onboarding(OnboardingCommand),
    /// What employees asked, what went unanswered (grouped into knowledge gaps), feedback,
    /// which documents answer, and onboarding per department.
    Report(ReportArgs),
    /// Send a message to every employee (or a group or department) in Telegram; `--status ID`
    /// reports its deliveries. Messages go out from `sputnik serve`, within Telegram's limits.
    Broadcast(BroadcastArgs),
    /// Talk to the knowledge base in the terminal, as an employee would in Telegram.
    Chat(ChatArgs),
    /// Run the Telegram bot (long polling) until SIGTERM or Ctrl-C.
    Serve,
    /// Write a consistent snapshot of the store (documents, embeddings, employees, plans,
    /// logs) to a file; works while `sputnik serve` runs.
    Backup(BackupArgs),
    /// Copy the whole store into an empty one elsewhere: the embedded store into a PostgreSQL
    /// database (the move to several replicas), or a PostgreSQL store into a new redb file.
    /// Stop `sputnik serve` first, so nothing written meanwhile is left behind.
    CopyStore(CopyStoreArgs),
    /// Replace the store with a backup and rebuild the indexes; the service must be stopped.
    /// The current store is kept beside it.
    Restore(RestoreArgs),
    /// Exit 0 when the running service is ready (its /readyz answers 200), 1 otherwise: for
    /// scripts and monitors.
    Healthcheck(JsonFlag),
    /// Check the configuration, bot token, model files, data directory, disk space and indexes,
    /// and say how to fix what is wrong.
    Doctor(DoctorArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), e.g. `sputnik man | man -l -`.
    Man,
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The backup file to create, or a directory to create `sputnik-YYYYMMDD-HHMMSS.redb` in.
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,
    #[command(flatten)]
    pub output: JsonFlag,
}

#[derive(Debug, Args)]
pub struct CopyStoreArgs {
    /// Where to: a PostgreSQL connection URL (postgresql://USER:PASSWORD@HOST:PORT/DATABASE, an
    /// empty database) or a redb file to create. Also read from SPUTNIK_COPY_TO, which keeps a
    /// password out of the shell's history.
    #[arg(long, env = "SPUTNIK_COPY_TO", value_name = "URL|FILE", hide_env_values = true)]
    pub to: String,
    #[command(flatten)]
    pub output: JsonFlag,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// A file written by `sputnik backup`.
    #[arg(value_name = "SRC")]
    pub src: PathBuf,
    #[command(flatten)]
    pub output: JsonFlag,
}

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Skip the checks that need the network (the bot token against Telegram).
    #[arg(long)]
    pub offline: bool,
    #[command(flatten)]
    pub output: JsonFlag,
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReindexArgs {
    /// Also re-embed every chunk with the configured embedding model (needed after changing
    /// embed.model); with embed.model = "none", drop all embeddings.
    #[arg(long)]
    pub reembed: bool,
    #[command(flatten)]
    pub output: JsonFlag,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Files or directories (searched recursively; hidden files are skipped).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Restrict the imported documents to an access group (repeatable). Without it, every
    /// employee may see them.
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Remove documents previously imported from these directories whose files are gone.
    #[arg(long)]
    pub sync: bool,
    /// Show what would change without writing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Only import files matching this glob, relative to the directory (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Skip files matching this glob, relative to the directory (repeatable).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    #[command(flatten)]
    pub output: JsonFlag,
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    /// The question or keywords.
    #[arg(required = true, value_name = "QUERY")]
    pub query: Vec<String>,
    /// Number of results [config: search.default_k].
    #[arg(long, short = 'k', value_name = "N")]
    pub k: Option<usize>,
    /// Search as a member of this access group (repeatable); public documents are always searched.
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Retrieval: full text, semantic, or both fused [config: search.mode].
    #[arg(long, value_enum)]
    pub mode: Option<SearchMode>,
    #[command(flatten)]
    pub output: JsonFlag,
}

#[derive(Debug, Subcommand)]
pub enum DocsCommand {
    /// List imported documents.
    List(JsonFlag),
    /// Show one document (by id or source path) and its chunks.
    Show {
        #[arg(value_name = "DOC")]
        document: String,
        /// Print every chunk's full text.
        #[arg(long)]
        full: bool,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Remove documents (by id or source path) from the store and the index.
    Remove {
        #[arg(required = true, value_name = "DOC")]
        documents: Vec<String>,
        #[command(flatten)]
        output: JsonFlag,
    },
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// JSON lines: {"id": "q1", "query": "...", "lang": "ru", "set": "faq", "expected":
    /// ["path.md"]}; "expected": [] marks a question the documents cannot answer.
    #[arg(value_name = "QUESTIONS.jsonl")]
    pub questions: PathBuf,
    /// Rank depth.
    #[arg(long, short = 'k', default_value_t = 10, value_name = "N")]
    pub k: usize,
    /// Evaluate as a member of this access group (repeatable).
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Retrieval to evaluate [config: search.mode].
    #[arg(long, value_enum, conflicts_with = "compare")]
    pub mode: Option<SearchMode>,
    /// Evaluate full text, meaning and both fused, one after another, and print one table (with
    /// --json: each mode's summary).
    #[arg(long)]
    pub compare: bool,
    /// With --json, show each question's first candidates: each leg's rank and score and the
    /// share of the question's words they hold.
    #[arg(long, requires = "json", conflicts_with = "compare")]
    pub explain: bool,
    #[command(flatten)]
    pub output: JsonFlag,
}

#[derive(Debug, Subcommand)]
pub enum PlansCommand {
    /// Validate plan files and store them (a plan with the same id is replaced). Links to
    /// documents must name imported documents, so import the handbook first.
    Import {
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// List stored plans.
    List(JsonFlag),
    /// Show one plan: its days, messages and tasks.
    Show {
        #[arg(value_name = "ID")]
        id: String,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// What a plan would send a new hire starting on a date, day by day, before anyone is
    /// invited (with a buddy and a manager, as most hires have).
    Preview {
        #[arg(value_name = "ID")]
        id: String,
        /// The first working day, YYYY-MM-DD.
        #[arg(long, value_name = "DATE")]
        start: String,
        /// How many days from the start to show.
        #[arg(long, default_value_t = 14, value_name = "N")]
        days: u32,
        #[command(flatten)]
        output: JsonFlag,
    },
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// How far back to look, e.g. 30d, 12h.
    #[arg(long, default_value = "30d", value_name = "DURATION")]
    pub since: String,
    #[arg(long, value_enum, default_value_t = ReportFormat::Table)]
    pub format: ReportFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Table,
    Json,
    /// One row per figure: section,name,value,detail.
    Csv,
}

#[derive(Debug, Args)]
pub struct BroadcastArgs {
    /// The message (plain text).
    #[arg(required_unless_present = "status", conflicts_with = "status")]
    pub text: Option<String>,
    /// Only members of this access group (repeatable).
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Only employees of this department (repeatable).
    #[arg(long = "department", value_name = "DEPARTMENT")]
    pub departments: Vec<String>,
    /// Report the deliveries of broadcast ID instead of sending one.
    #[arg(long, value_name = "ID")]
    pub status: Option<u64>,
    #[command(flatten)]
    pub output: JsonFlag,
}

#[derive(Debug, Subcommand)]
pub enum OnboardingCommand {
    /// Per employee: tasks done of total, overdue tasks, quiz results, last activity.
    Status(StatusArgs),
    /// What the scheduler will send to whom, and when, over the next days (assuming nobody
    /// ticks anything off meanwhile).
    Upcoming {
        /// How many days ahead, from today.
        #[arg(long, default_value_t = 7, value_name = "N")]
        days: u32,
        #[command(flatten)]
        output: JsonFlag,
    },
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Only employees of this department.
    #[arg(long)]
    pub department: Option<String>,
    /// Only employees with overdue tasks.
    #[arg(long)]
    pub overdue: bool,
    /// Print JSON instead of a table.
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV instead of a table.
    #[arg(long)]
    pub csv: bool,
}

#[derive(Debug, Args)]
pub struct AssignArgs {
    /// The new hire: id or exact name.
    #[arg(value_name = "EMPLOYEE")]
    pub employee: String,
    /// Plan id (see `sputnik plans list`).
    #[arg(long)]
    pub plan: String,
    /// Day 1 of the plan, YYYY-MM-DD (default: the employee's start date, else today).
    #[arg(long, value_name = "DATE")]
    pub start: Option<String>,
    /// Their buddy: id or exact name; introduced to each other on day one.
    #[arg(long, value_name = "EMPLOYEE")]
    pub buddy: Option<String>,
    /// Their manager, told about long-overdue tasks.
    #[arg(long, value_name = "EMPLOYEE")]
    pub manager: Option<String>,
    /// HR contact, told about long-overdue tasks when there is no manager (default: the plan's).
    #[arg(long, value_name = "EMPLOYEE")]
    pub hr: Option<String>,
    /// Their time zone, e.g. Asia/Novosibirsk [config: onboarding.timezone].
    #[arg(long, value_name = "ZONE")]
    pub timezone: Option<String>,
    #[command(flatten)]
    pub output: JsonFlag,
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Create an employee and print their single-use invite link and code.
    Invite(InviteArgs),
    /// Give an employee an onboarding plan (replacing any they had).
    Assign(AssignArgs),
    /// List employees.
    List(JsonFlag),
    /// Show one employee.
    Show {
        #[arg(value_name = "ID")]
        id: u64,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Switch an employee's access off; they get a polite refusal and nothing else.
    Deactivate {
        #[arg(value_name = "ID")]
        id: u64,
    },
    /// Switch an employee's access back on.
    Activate {
        #[arg(value_name = "ID")]
        id: u64,
    },
    /// Make an employee an admin (admin commands in Telegram).
    Promote {
        #[arg(value_name = "ID")]
        id: u64,
    },
    /// Make an admin an ordinary employee again.
    Demote {
        #[arg(value_name = "ID")]
        id: u64,
    },
}

#[derive(Debug, Args)]
pub struct InviteArgs {
    /// Full name, as the bot will greet them.
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub department: String,
    /// Job title ("Backend developer"); with the department, it picks the onboarding plan.
    #[arg(long)]
    pub position: Option<String>,
    #[arg(long, value_enum, default_value_t = Role::Employee)]
    pub role: Role,
    /// Access group (repeatable): documents imported with this group become visible to them.
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// First working day, YYYY-MM-DD.
    #[arg(long, value_name = "DATE")]
    pub start_date: Option<String>,
    /// How long the invite stays valid, e.g. 7d, 36h [config: chat.invite_lifetime].
    #[arg(long, value_name = "DURATION")]
    pub expires: Option<String>,
    #[command(flatten)]
    pub output: JsonFlag,
}

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// Talk as this employee (id from `sputnik users list`), with their access groups.
    /// Without it, a local admin named "Terminal" is used (created on first use).
    #[arg(long = "as", value_name = "ID")]
    pub employee: Option<u64>,
    /// Answer in this language until /lang changes it: ru or en.
    #[arg(long, value_name = "LANG")]
    pub lang: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print the effective values (secrets masked).
    Check(JsonFlag),
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
