//! Experiment files and run folders written before the model's shared settings became nested tables
//! (`[model.net]`, `[model.ode]`, `[model.base]`): their flat keys are moved to where they live now, with a note,
//! so that old files and old runs still load, resume and evaluate.

/// (kinds, old flat key, new key inside the nested table) for each table.
const NET: (&[&str], &str, &[&str]) =
    (&["ddpm", "score", "ncsn", "diffflow"], "net", &["arch", "hidden", "emb_dim", "activation", "unet_ch", "unet_mults", "unet_groups"]);
const ODE: &[(&str, &str)] = &[("ode_rtol", "rtol"), ("exact_divergence_max_dim", "exact_divergence_max_dim"), ("hutchinson_probes", "hutchinson_probes")];
const ODE_KINDS: &[&str] = &["score", "ncsn", "diffflow"];
const BASE: &[(&str, &str)] = &[("base", "kind"), ("base_components", "components"), ("resampled", "resampled")];
const BASE_KINDS: &[&str] = &["realnvp", "nice", "nsf", "maf", "planar", "glow"];

/// Moves the flat keys of a `[model]` table into their nested tables; returns one line per key moved. A flat key
/// wins over the same nested key (it is the later setting: a `--set` in the old spelling).
pub fn migrate(model: &mut toml::Table) -> Vec<String> {
    let kind = model.get("kind").and_then(|k| k.as_str()).unwrap_or("").to_string();
    let mut moved = Vec::new();
    if NET.0.contains(&kind.as_str()) {
        let pairs: Vec<(&str, &str)> = NET.2.iter().map(|k| (*k, *k)).collect();
        moved.extend(move_into(model, NET.1, &pairs));
    }
    if ODE_KINDS.contains(&kind.as_str()) {
        moved.extend(move_into(model, "ode", ODE));
    }
    if BASE_KINDS.contains(&kind.as_str()) && !model.get("base").is_some_and(|b| b.is_table()) {
        moved.extend(move_into(model, "base", BASE));
    }
    moved
}

/// Moves `old` keys of `model` to `table.new`, for each (old, new) pair present.
fn move_into(model: &mut toml::Table, table: &str, pairs: &[(&str, &str)]) -> Vec<String> {
    let mut moved = Vec::new();
    let mut nested = match model.get(table) {
        Some(toml::Value::Table(t)) => t.clone(),
        _ => toml::Table::new(),
    };
    for (old, new) in pairs {
        if old == &table && model.get(table).is_some_and(|v| v.is_table()) {
            continue;
        }
        if let Some(v) = model.remove(*old) {
            nested.insert(new.to_string(), v);
            moved.push(format!("model.{old} -> model.{table}.{new}"));
        }
    }
    if !moved.is_empty() {
        model.insert(table.to_string(), toml::Value::Table(nested));
    }
    moved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(s: &str) -> toml::Table {
        s.parse().unwrap()
    }

    #[test]
    fn flat_network_and_ode_keys_move_into_their_tables() {
        let mut t = table("kind = \"diffflow\"\nhidden = [8]\nunet_ch = 4\node_rtol = 1e-3\nsteps = 5");
        let moved = migrate(&mut t);
        assert_eq!(moved.len(), 3, "{moved:?}");
        assert_eq!(t, table("kind = \"diffflow\"\nsteps = 5\n[net]\nhidden = [8]\nunet_ch = 4\n[ode]\nrtol = 1e-3"));
    }

    #[test]
    fn flat_base_becomes_the_base_table_and_a_flat_key_wins() {
        let mut t = table("kind = \"realnvp\"\nbase = \"resampled\"\nbase_components = 3\n[resampled]\ntruncation = 7");
        migrate(&mut t);
        assert_eq!(t, table("kind = \"realnvp\"\n[base]\nkind = \"resampled\"\ncomponents = 3\n[base.resampled]\ntruncation = 7"));
        let mut t = table("kind = \"ddpm\"\nhidden = [4]\n[net]\nhidden = [8]\nemb_dim = 16");
        migrate(&mut t);
        assert_eq!(t, table("kind = \"ddpm\"\n[net]\nhidden = [4]\nemb_dim = 16"));
    }

    #[test]
    fn current_layouts_and_other_kinds_are_left_alone() {
        for s in ["kind = \"realnvp\"\nhidden = [8]\n[base]\nkind = \"gmm\"", "kind = \"vae\"\nhidden = [8]", "kind = \"score\"\n[net]\nhidden = [8]"] {
            let mut t = table(s);
            assert!(migrate(&mut t).is_empty(), "{s}");
            assert_eq!(t, table(s));
        }
    }
}
