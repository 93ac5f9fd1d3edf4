//! `hark new NAME --lang LANG`: a name and a template come in; `functions/NAME/` made from
//! the template, the function added to the stack file, and what to do next go out (see
//! [`crate::scaffold`]). `hark new --list` lists the templates.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::scaffold::{self, Template, TEMPLATES};

#[derive(Debug, clap::Args)]
pub struct NewArgs {
    /// Name of the function: 1 to 63 characters of a-z, 0-9 and '-'.
    #[arg(required_unless_present = "list")]
    pub name: Option<String>,
    /// Template: shell, rust, python or browser (`--list` describes them).
    #[arg(long, required_unless_present = "list")]
    pub lang: Option<String>,
    /// List the templates.
    #[arg(long, conflicts_with_all = ["name", "lang"])]
    pub list: bool,
    /// Stack file to add the function to (created if missing); the function's directory
    /// is made beside it, under `functions/`.
    #[arg(short = 'f', long = "file", default_value = "hark.yml")]
    pub file: PathBuf,
}

pub fn run(args: NewArgs) -> anyhow::Result<ExitCode> {
    if args.list {
        for template in TEMPLATES {
            println!("{:<8} {}", template.lang, template.description());
        }
        return Ok(ExitCode::SUCCESS);
    }
    // clap requires both unless --list is given.
    let (Some(name), Some(lang)) = (args.name, args.lang) else {
        anyhow::bail!("give a function name and --lang (or --list)");
    };
    let template = Template::find(&lang)?;
    let created = scaffold::create(template, &name, &args.file)?;
    let stack = args.file.display();
    println!(
        "Created {}/ ({}) from the {lang} template, and {} {stack}.",
        created.dir.display(),
        created
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        if created.stack_created {
            format!("{name} in a new")
        } else {
            format!("added {name} to")
        },
    );
    println!("\nNext:");
    // The commands run beside the stack file.
    if let Some(dir) = args.file.parent().filter(|p| !p.as_os_str().is_empty()) {
        println!("  cd {}", dir.display());
    }
    let file_name = args
        .file
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let (file, config) = if file_name == "hark.yml" {
        (String::new(), String::new())
    } else {
        (format!(" -f {file_name}"), format!(" --config {file_name}"))
    };
    if let Some(build) = &created.build {
        println!("  {build}");
    }
    println!("  hark up{config}            # serves it with the process provider");
    let input = if lang == "browser" {
        "https://example.org"
    } else {
        "Ada"
    };
    println!("  curl -d {input} http://127.0.0.1:8080/function/{name}");
    println!("  hark build {name}{file} && hark up{config} --provider docker   # in a container");
    if lang == "browser" {
        println!(
            "\nIt calls the WebDriver server in HARK_WEBDRIVER_URL, which the gateway's browser\n\
             pool sets. To use a ChromeDriver of your own, run `chromedriver --port=9515`, add\n\
             `HARK_WEBDRIVER_URL: http://127.0.0.1:9515` under its `environment:` in {stack},\n\
             and `hark.network.connect: \"9515\"` under its `annotations:`."
        );
    }
    Ok(ExitCode::SUCCESS)
}
