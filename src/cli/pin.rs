//! `bottle pin` and `bottle unpin`: keep stages from `gc`.

use super::output;
use super::StoreArg;
use crate::error::Exit;
use crate::stage::pins;

/// Keep a stage from garbage collection
///
/// Pins live in the store's .pins/ directory, never inside a stage.
#[derive(Debug, clap::Args)]
pub struct PinArgs {
    /// A stage id or a unique prefix of at least 6 digits
    id: String,
    /// A name for the pin (letters, digits, `_`, `-`); default: the id
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    store: StoreArg,
}

/// Remove a pin, by its name or by the stage it pins (all of that stage's pins)
#[derive(Debug, clap::Args)]
pub struct UnpinArgs {
    /// A pin name, or a stage id or prefix
    name_or_id: String,
    #[command(flatten)]
    store: StoreArg,
}

pub fn exec_pin(args: PinArgs) -> anyhow::Result<Exit> {
    let store = args.store.open();
    let id = store.resolve(&args.id)?;
    let pin = pins::pin(&store, &id, args.name.as_deref())?;
    output::note(&format!("pinned {} as `{}`", pin.id, pin.name));
    Ok(Exit::Success)
}

pub fn exec_unpin(args: UnpinArgs) -> anyhow::Result<Exit> {
    let store = args.store.open();
    for pin in pins::unpin(&store, &args.name_or_id)? {
        output::note(&format!("unpinned `{}` ({})", pin.name, pin.id));
    }
    Ok(Exit::Success)
}
