//! `hark build`: a stack file and a function name come in; the function's image,
//! `hark/NAME:latest`, built by the local engine with a progress bar, goes out
//! (see [`crate::provider::docker::build`] for what goes into it). `hark build
//! --gateway-image` builds the gateway's own image, `hark/gateway:latest`, instead.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use crate::function::FunctionDeployment;
use crate::provider::docker::build::{
    build_function, build_gateway, BuildEvent, BuildSettings, GATEWAY_DATA_DIR,
};
use crate::provider::docker::{self, spec::default_image};
use crate::stack::Stack;

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Function to build; every function of the stack file when omitted.
    pub name: Option<String>,
    /// Stack file.
    #[arg(short = 'f', long = "file", default_value = "hark.yml")]
    pub file: PathBuf,
    /// Tag of the image (`hark/NAME:TAG`), for functions whose stack entry names no image.
    #[arg(long, default_value = "latest")]
    pub tag: String,
    /// Build the gateway's own image, `hark/gateway:TAG` (`hark up` in a container: port
    /// 8080, data in the volume /var/lib/hark, stack file read from /etc/hark/hark.yml),
    /// instead of functions' images. (Not `--gateway`: that global flag names the gateway
    /// the client commands talk to.)
    #[arg(long, conflicts_with = "name")]
    pub gateway_image: bool,
}

/// The repository of the gateway's image.
pub const GATEWAY_IMAGE: &str = "hark/gateway";

pub async fn run(args: BuildArgs) -> anyhow::Result<ExitCode> {
    if args.gateway_image {
        let docker = docker::connect().await?;
        let settings = BuildSettings::from_host()?;
        let tag = format!("{GATEWAY_IMAGE}:{}", args.tag);
        let started = Instant::now();
        let (bar, mut progress) = progress_bar(&tag);
        let result = build_gateway(&docker, &tag, &settings, &mut progress).await;
        bar.finish_and_clear();
        result.with_context(|| format!("building the gateway image {tag}"))?;
        eprintln!(
            "hark: built {tag} in {:.1}s; run it with: docker run -p 8080:8080 -v hark-data:{GATEWAY_DATA_DIR} {tag}",
            started.elapsed().as_secs_f64()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let stack = load(&args.file)?;
    let functions: Vec<FunctionDeployment> = match &args.name {
        Some(name) => {
            let spec = stack
                .functions
                .into_iter()
                .find(|f| f.service.as_str() == name)
                .with_context(|| format!("{}: no function {name:?}", args.file.display()))?;
            vec![spec]
        }
        None => stack.functions,
    };
    let docker = docker::connect().await?;
    let settings = BuildSettings::from_host()?;
    for spec in &functions {
        let tag = image_tag(spec, &args.tag);
        build_one(&docker, spec, &tag, &settings).await?;
    }
    Ok(ExitCode::SUCCESS)
}

fn load(file: &Path) -> anyhow::Result<Stack> {
    let stack = Stack::load(file)?;
    for warning in &stack.warnings {
        eprintln!("{}: {warning}", file.display());
    }
    Ok(stack)
}

/// The image a function's stack entry names, or `hark/NAME:TAG`.
fn image_tag(spec: &FunctionDeployment, tag: &str) -> String {
    if spec.image.trim().is_empty() {
        format!("hark/{}:{tag}", spec.service)
    } else {
        spec.image.clone()
    }
}

/// Builds one image, showing the engine's steps on a progress bar.
pub async fn build_one(
    docker: &bollard::Docker,
    spec: &FunctionDeployment,
    tag: &str,
    settings: &BuildSettings,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let (bar, mut progress) = progress_bar(tag);
    let result = build_function(docker, spec, tag, settings, &mut progress).await;
    bar.finish_and_clear();
    result.with_context(|| format!("building {tag} for function {}", spec.service))?;
    eprintln!(
        "hark: built {tag} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A progress bar named `tag`, and what moves it along the engine's build steps.
fn progress_bar(tag: &str) -> (ProgressBar, impl FnMut(BuildEvent) + Send) {
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} [{bar:24}] {pos}/{len} {wide_msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(tag.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    let shown = bar.clone();
    let progress = move |event: BuildEvent| match event {
        BuildEvent::Context { image, bytes } => {
            shown.set_prefix(image);
            shown.set_position(0);
            shown.set_message(format!("sending {:.1} MB of context", bytes as f64 / 1e6));
        }
        BuildEvent::Output(line) => {
            // "Step 2/6 : COPY app/ /home/app/"
            if let Some((step, rest)) = line.strip_prefix("Step ").and_then(|s| s.split_once(" : "))
            {
                if let Some((n, of)) = step.split_once('/') {
                    if let (Ok(n), Ok(of)) = (n.parse::<u64>(), of.parse::<u64>()) {
                        shown.set_length(of);
                        shown.set_position(n);
                    }
                }
                shown.set_message(rest.to_owned());
            }
        }
    };
    (bar, progress)
}

/// Builds the images of `functions` that the engine does not have yet (for
/// `hark up --provider docker`).
pub async fn build_missing(functions: &[FunctionDeployment]) -> anyhow::Result<()> {
    let docker = docker::connect().await?;
    let mut settings = None;
    for spec in functions {
        let image = default_image(spec);
        if docker.inspect_image(&image).await.is_ok() {
            continue;
        }
        if !spec.image.trim().is_empty() && !image.starts_with("hark/") {
            // Not an image Hark builds: the deploy reports it missing.
            continue;
        }
        let settings = match &settings {
            Some(s) => s,
            None => settings.insert(BuildSettings::from_host()?),
        };
        eprintln!("hark: image {image} is missing; building it");
        // One function that cannot be built does not keep the others down; its deploy
        // then reports the missing image.
        if let Err(e) = build_one(&docker, spec, &image, settings).await {
            eprintln!("hark: {e:#}");
        }
    }
    Ok(())
}
