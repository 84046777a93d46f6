//! `cargo xtask stages`: regenerates stages/ from examples/*.toml, every agent of each, through
//! the same store code as `bottle gen`, and removes stages no example produces.

use std::collections::BTreeSet;

use fs_err as fs;

use crate::{root, stages_of};

pub fn run() -> anyhow::Result<()> {
    let store = bottle::stage::Store::new(root().join("stages"));
    let mut wanted = BTreeSet::new();
    let mut examples: Vec<_> = fs::read_dir(root().join("examples"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    examples.sort();
    for example in examples
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
    {
        for stage in stages_of(example)? {
            let outcome = store.write(&stage)?;
            println!(
                "{:?} {} ({}, agent {})",
                outcome,
                stage.id,
                example.display(),
                stage.spec.agent
            );
            wanted.insert(stage.id);
        }
    }
    for id in store.ids()? {
        if !wanted.contains(&id) {
            let dir = store.stage_dir(&id);
            fs::remove_dir_all(&dir)?;
            println!("removed {}", dir.display());
        }
    }
    Ok(())
}
