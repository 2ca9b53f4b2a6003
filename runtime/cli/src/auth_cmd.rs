//! `ray get-auth-token [--generate]`.

use std::io::Write;

use anyhow::{Result, bail};
use ray_common::auth;

/// Prints the token (no newline on stdout, so `$(ray get-auth-token)` is exact).
pub fn run(a: crate::args::GetAuthTokenArgs) -> Result<()> {
    let token = match auth::find_token()? {
        Some((t, _)) => t,
        None if a.generate => {
            eprintln!("Generating new authentication token...");
            let path = auth::default_token_path()?;
            let t = auth::create_token_file(&path)?;
            eprintln!("Generated new authentication token and saved to {}", path.display());
            t
        }
        None => bail!("No authentication token found. Use `ray get-auth-token --generate` to create one."),
    };
    let mut out = std::io::stdout();
    out.write_all(token.expose_secret().as_bytes())?;
    out.flush()?;
    eprintln!();
    Ok(())
}
