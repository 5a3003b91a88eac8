//! Writes the seeds derived from the protocol test vectors into a corpus folder, one
//! subfolder per fuzz target: `write_seeds [DIR]` (default `fuzz/corpus`).
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    let seeds = orelay_checks::seeds::seeds();
    for (target, _) in orelay_checks::TARGETS {
        std::fs::create_dir_all(dir.join(target))?;
    }
    for seed in &seeds {
        std::fs::write(
            dir.join(seed.target).join(format!("seed-{}", seed.name)),
            &seed.data,
        )?;
    }
    println!("wrote {} seeds under {}", seeds.len(), dir.display());
    Ok(())
}
