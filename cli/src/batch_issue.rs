//! `scanloop batch issue`: issues a batch of printed codes and streams it to a file for the print
//! shop, with a progress bar. The batch is deterministic (the same request id answers the same
//! batch, codes derived from it in serial order), so a run that stops — a dropped connection, a
//! killed process — is resumed by running the same command again: the codes already in the file
//! are checked against the batch and skipped, and the rest appended. Within one run a dropped
//! stream is resumed the same way, a few times, before giving up.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, BufWriter, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use scanloop_proto::activation::v1 as pb;
use scanloop_proto::activation::v1::activation_service_client::ActivationServiceClient;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `serial,code` lines under a header.
    Csv,
    /// One code per line.
    Lines,
}

#[derive(clap::Args)]
pub struct IssueArgs {
    #[arg(
        long,
        env = "SCANLOOP_ACTIVATION_ADDR",
        default_value = "127.0.0.1:50051"
    )]
    pub addr: String,
    #[arg(long)]
    pub brand: String,
    /// The idempotency key of this batch: the same id resumes the same batch.
    #[arg(long)]
    pub request_id: String,
    #[arg(long)]
    pub sku: String,
    /// The product model printed on the warranty (required by the service).
    #[arg(long)]
    pub model: String,
    #[arg(long, default_value_t = 12)]
    pub warranty_months: u32,
    /// 1 ..= 1,000,000.
    #[arg(long)]
    pub quantity: u32,
    /// The brand's code key that signs the batch.
    #[arg(long, default_value = "k1")]
    pub key_id: String,
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    pub format: Format,
}

const CSV_HEADER: &str = "serial,code";
/// Attempts within one run when the stream drops.
const ATTEMPTS: u32 = 5;

pub async fn run(args: IssueArgs) -> anyhow::Result<()> {
    let bearer = crate::credentials::bearer("batch-issue")?;
    let request = pb::IssueBatchRequest {
        brand_id: args.brand.clone(),
        request_id: args.request_id.clone(),
        sku: args.sku.clone(),
        product_model: args.model.clone(),
        warranty_months: args.warranty_months,
        quantity: args.quantity,
        key_id: args.key_id.clone(),
    };
    let started = Instant::now();
    let progress = ProgressBar::new(u64::from(args.quantity)).with_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} codes ({per_sec}, {eta} left) {msg}",
        )?,
    );
    let mut attempt = 0;
    let (batch_id, written_before) = loop {
        attempt += 1;
        match stream_once(&args, &request, &bearer, &progress).await {
            Ok(done) => break done,
            Err(error) if attempt < ATTEMPTS && retryable(&error) => {
                progress.set_message(format!("stream dropped ({error:#}); resuming"));
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
            Err(error) => {
                progress.abandon();
                return Err(error);
            }
        }
    };
    progress.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "batch {batch_id}: {} codes in {} ({} already there, {} written in {seconds:.1} s, {:.0} codes/s)",
        args.quantity,
        args.out.display(),
        written_before,
        u64::from(args.quantity) - written_before,
        (u64::from(args.quantity) - written_before) as f64 / seconds.max(1e-9),
    );
    Ok(())
}

/// One pass: reads what the file holds, opens the stream, checks the file belongs to this
/// batch, skips what it holds and appends the rest. Returns the batch id and how many codes the
/// file held at the start.
async fn stream_once(
    args: &IssueArgs,
    request: &pb::IssueBatchRequest,
    bearer: &scanloop_service::access::Bearer,
    progress: &ProgressBar,
) -> anyhow::Result<(String, u64)> {
    let existing = Existing::read(&args.out, args.format)?;
    anyhow::ensure!(
        existing.codes <= u64::from(args.quantity),
        "{} holds {} codes, more than the batch's {}: another batch's file?",
        args.out.display(),
        existing.codes,
        args.quantity
    );
    progress.set_position(existing.codes);
    let mut client =
        crate::credentials::connect(&args.addr, bearer, ActivationServiceClient::new).await?;
    let mut stream = client.issue_batch(request.clone()).await?.into_inner();
    let mut file = existing.open_for_append(&args.out, args.format)?;
    let mut serial: u64 = 0;
    let mut batch_id = String::new();
    while let Some(message) = stream.message().await? {
        if batch_id.is_empty() {
            batch_id = message.batch_id.clone();
        }
        for code in message.codes {
            serial += 1;
            if serial == 1
                && let Some(first) = &existing.first_code
                && *first != code
            {
                anyhow::bail!(
                    "{} was written for another batch (its first code differs): choose another \
                     --out, or the request id that wrote it",
                    args.out.display()
                );
            }
            if serial <= existing.codes {
                continue;
            }
            match args.format {
                Format::Csv => writeln!(file, "{serial},{code}")?,
                Format::Lines => writeln!(file, "{code}")?,
            }
            progress.inc(1);
        }
    }
    file.flush()?;
    anyhow::ensure!(
        serial == u64::from(args.quantity),
        "the stream ended after {serial} of {} codes",
        args.quantity
    );
    Ok((batch_id, existing.codes))
}

/// Transport failures and UNAVAILABLE are worth a resume; a refusal is not.
fn retryable(error: &anyhow::Error) -> bool {
    if let Some(status) = error.downcast_ref::<tonic::Status>() {
        return matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
        );
    }
    error.downcast_ref::<tonic::transport::Error>().is_some()
}

/// What an output file already holds: complete code lines, and the first code.
struct Existing {
    codes: u64,
    first_code: Option<String>,
    /// Bytes of complete lines (a torn last line is cut off before appending).
    complete_bytes: u64,
    has_header: bool,
}

impl Existing {
    fn read(path: &Path, format: Format) -> anyhow::Result<Self> {
        let empty = Self {
            codes: 0,
            first_code: None,
            complete_bytes: 0,
            has_header: false,
        };
        let Ok(file) = File::open(path) else {
            return Ok(empty);
        };
        let mut reader = BufReader::new(file);
        let mut existing = empty;
        let mut line = String::new();
        loop {
            line.clear();
            let read = reader.read_line(&mut line)?;
            if read == 0 || !line.ends_with('\n') {
                break; // end, or a torn last line
            }
            existing.complete_bytes += read as u64;
            let text = line.trim_end();
            if format == Format::Csv && !existing.has_header && existing.codes == 0 {
                anyhow::ensure!(
                    text == CSV_HEADER,
                    "{} does not start with {CSV_HEADER:?}: not a batch file of this format",
                    path.display()
                );
                existing.has_header = true;
                continue;
            }
            let code = match format {
                Format::Csv => text.split_once(',').map_or(text, |(_, code)| code),
                Format::Lines => text,
            };
            if existing.first_code.is_none() {
                existing.first_code = Some(code.to_owned());
            }
            existing.codes += 1;
        }
        // Drain so a huge torn tail is not an error.
        let _ = reader.read_to_end(&mut Vec::new());
        Ok(existing)
    }

    fn open_for_append(&self, path: &Path, format: Format) -> anyhow::Result<BufWriter<File>> {
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        file.set_len(self.complete_bytes)?;
        file.seek(SeekFrom::End(0))?;
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        if format == Format::Csv && !self.has_header {
            writeln!(writer, "{CSV_HEADER}")?;
        }
        Ok(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str, content: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "scanloop-batch-{}-{name}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn a_torn_last_line_is_not_counted_and_is_cut_before_appending() {
        let path = temp(
            "torn.csv",
            "serial,code\n1,https://a/1\n2,https://a/2\n3,https://a",
        );
        let existing = Existing::read(&path, Format::Csv).unwrap();
        assert_eq!(existing.codes, 2);
        assert_eq!(existing.first_code.as_deref(), Some("https://a/1"));
        let mut writer = existing.open_for_append(&path, Format::Csv).unwrap();
        writeln!(writer, "3,https://a/3").unwrap();
        drop(writer);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "serial,code\n1,https://a/1\n2,https://a/2\n3,https://a/3\n"
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_file_of_another_format_is_refused() {
        let path = temp("lines.csv", "https://a/1\n");
        assert!(Existing::read(&path, Format::Csv).is_err());
        let existing = Existing::read(&path, Format::Lines).unwrap();
        assert_eq!(existing.codes, 1);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_missing_file_holds_nothing() {
        let existing = Existing::read(Path::new("/nonexistent/batch.csv"), Format::Csv).unwrap();
        assert_eq!(existing.codes, 0);
        assert!(!existing.has_header);
    }
}
