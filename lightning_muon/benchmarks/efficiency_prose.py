"""The words of the generated efficiency pages, written against the numbers of the benchmark's JSON.

Each text takes its numbers from the JSON (``prose(data)``), so a rerun of the benchmark changes
the numbers on the page, and the comparisons ("fewer", "misses") are computed, not typed.
"""

from __future__ import annotations

from typing import Any


def _rows(data: dict[str, Any], section: str) -> dict[str, dict[str, Any]]:
    return {row["label"]: row for row in data[section]}


def _f(row: dict[str, Any] | None) -> float | None:
    return None if row is None or row["fraction"] is None else row["fraction"]["mean"]


def _pct(x: float | None, row: Any = True) -> str:
    if row is None:
        return "not measured"
    return "not reached" if x is None else f"{100 * x:.0f}%"


def _loss(row: dict[str, Any] | None) -> str:
    return (
        "–"
        if row is None or row["final_val_loss"] is None
        else f"{row['final_val_loss']['mean']:.3f}"
    )


def papers(data: dict[str, Any]) -> str:
    """The comparison with the papers' claims, as a table."""
    t = _rows(data, "table")
    muon = _f(t.get("muon"))
    normuon, adamuon = _f(t.get("normuon")), _f(t.get("adamuon"))
    nsr = _f(t.get("muon_nsr"))
    pct = lambda name: _pct(_f(t.get(name)), t.get(name))  # noqa: E731

    def vs_muon(x: float | None) -> str:
        if x is None or muon is None:
            return "–"
        return (
            f"{muon / x:.2f}× fewer steps than tuned Muon"
            if x < muon
            else f"{x / muon:.2f}× more steps than tuned Muon"
        )

    def verdict(x: float | None, bound: float) -> str:
        return "–" if x is None else ("matches" if x <= bound else "misses")

    m = data["config"]["model"]
    rows = [
        "| claim | paper | here |",
        "|---|---|---|",
        f"| Muon + AdamW hybrid (one lr 1e-2, Moonlight scaling) vs AdamW | 0.55 of AdamW's steps "
        f"(an independent harness, 2,048 tokens/step) | {pct('hybrid')} |",
        f"| NorMuon vs AdamW / vs Muon | 21.7% fewer tokens than AdamW (≤ 78%), 11.3% over Muon "
        f"(1.1 B) | {pct('normuon')} of AdamW's steps ({verdict(normuon, 0.783)}); {vs_muon(normuon)} |",
        f"| AdaMuon vs AdamW | > 40% fewer tokens (< 60%) | {pct('adamuon')} of AdamW's steps "
        f"({verdict(adamuon, 0.6)}); {vs_muon(adamuon)} |",
        f"| Muon-NSR / Muon-VS vs tuned Muon | 1.36× fewer iterations (1.2 B) | {pct('muon_nsr')} / "
        f"{pct('muon_vs')} of AdamW's steps; {vs_muon(nsr)} (NSR) |",
    ]
    return (
        "\n".join(rows)
        + f"\n\nThe papers train 10⁸–10⁹-parameter models for billions of tokens; this benchmark is a "
        f"{m['n_layer']}-layer, {m['n_embd']}-wide model trained for "
        f"{data['config']['train']['steps']} steps, so a claim that does not hold here may still "
        f"hold at scale, and {max(len(r['seeds']) for r in data['table'])} seeds cannot resolve "
        "differences of a few percent."
    )


def intro(data: dict[str, Any]) -> str:
    """What of the protocol this page's measurement covers (it may be cut short on a busy machine)."""
    cfg, tuned = data["config"], _rows(data, "table")
    seeds = cfg["seeds"]
    full = [r["label"] for r in data["table"] if len(r["seeds"]) == len(seeds)]
    partial = [
        f"{r['label']} ({len(r['seeds'])})" for r in data["table"] if len(r["seeds"]) < len(seeds)
    ]
    unbracketed = {
        label: g["unbracketed"] for label, g in data["grids"].items() if g["unbracketed"]
    }
    no_grid = [n for n in cfg.get("no_grid", []) if n in tuned or n == "spectral_muon"]
    cut = bool(cfg.get("cached_only"))
    lines = [
        "**What this page's run covers.** The protocol above is what the command runs to the end"
        + (
            ". On the shared 2-core machine that produced this page a 400-step run took "
            f"{_median_wall(data) / 60:.0f} minutes instead of about half a minute, so the run "
            "was cut to fit its time: its numbers are what the cache held (`--cached-only`). "
            if cut
            else f", and this page's run did (median {_median_wall(data):.0f} s per 400-step run). "
        )
    ]
    if cfg.get("ns_dtype"):
        lines.append(f"Newton–Schulz runs in {cfg['ns_dtype']} in every run (`--ns-dtype`). ")
    if no_grid:
        lines.append(
            f"Without their own grid: {', '.join(no_grid)} (measured at its defaults and at "
            "AdamW's tuned lr only). "
        )
    if unbracketed:
        lines.append(
            "Not bracketed (the best cell sits on the grid's edge there, so the tuned result is an "
            "upper bound on the loss): "
            + "; ".join(f"{k}: {', '.join(v)}" for k, v in unbracketed.items())
            + ". "
        )
    lines.append(f"All {len(seeds)} seeds: {', '.join(full) or 'none'}")
    if partial:
        lines.append(f"; fewer seeds (count): {', '.join(partial)}")
    lines.append(".")
    spread = seed_spread(data)
    if spread is not None:
        multi = [r["label"] for r in data["table"] if len(r["seeds"]) > 1]
        lines.append(
            f" **Seed noise:** the final loss of one configuration moves by up to {spread:.3f} "
            f"between seeds (rows run on several seeds: {', '.join(multi)}). The grid cells all "
            f"use seed {seeds[0]} (the same initialisation and batch order), so their differences "
            "are paired and less noisy than that, but one seed does not resolve differences of a "
            "few hundredths."
        )
    return "".join(lines)


def seed_spread(data: dict[str, Any]) -> float | None:
    """The largest max–min of the final loss over seeds among the rows run on several seeds."""
    spreads = [
        r["final_val_loss"]["max"] - r["final_val_loss"]["min"]
        for r in data["table"]
        if len(r["seeds"]) > 1 and r["final_val_loss"] is not None
    ]
    return max(spreads) if spreads else None


def _median_wall(data: dict[str, Any]) -> float:
    walls = sorted(r["wall_s"] for r in data["runs"])
    return walls[len(walls) // 2] if walls else float("nan")


def _final(row: dict[str, Any] | None) -> float | None:
    return None if row is None or row["final_val_loss"] is None else row["final_val_loss"]["mean"]


def paper_settings() -> dict[str, tuple[str, str]]:
    """Each optimizer's paper setting where its defaults differ (the classes' ``paper_settings``)."""
    from ..optim.registry import get_optimizer_class

    out = {}
    for name in ("muon", "normuon", "adamuon", "muon_nsr", "muon_vs"):
        cls = get_optimizer_class(name)
        kwargs = ", ".join(f"{k}={v!r}" for k, v in cls.paper_settings.items())
        out[name] = (
            cls.paper_source,
            f"{cls.__name__}(params, **{cls.__name__}.paper_settings)`: `{kwargs}",
        )
    return out


def defaults(data: dict[str, Any]) -> str:
    """The rule behind the defaults, and the measurements that support or limit it."""
    tuned, d = _rows(data, "table"), _rows(data, "defaults")
    first = str(data["config"]["seeds"][0])
    adamw_final = data["targets"].get(first)  # the defaults rows run on the first seed
    lines = [
        "**The rule of the defaults.** The orthogonal update's RMS is matched to AdamW's "
        '(`scale="moonlight"`, 0.2·sqrt(max(m, n)), or `scale="rms"` where the paper normalises '
        "the update's RMS to 0.2) and `adamw_lr_ratio=1`, so **one lr serves both branches**; each "
        "default lr is the best factor-of-2 value of its grid at that ratio. For Muon that is the "
        "one-lr Moonlight hybrid.",
        "",
    ]
    for name in ("muon", "normuon", "adamuon", "muon_nsr", "muon_vs"):
        best, prop = tuned.get(name), tuned.get(f"{name} (defaults)")
        old = d.get(f"{name}|0.1 defaults")
        parts = []
        if best is not None:
            parts.append(f"tuned {_pct(_f(best))} (final {_final(best):.3f})")
        if prop is not None:
            parts.append(f"defaults {_pct(_f(prop))} ({_final(prop):.3f})")
        if old is not None:
            parts.append(f"0.1 defaults {_pct(_f(old))} ({_final(old):.3f})")
        if parts:
            lines.append(f"- {name}: " + "; ".join(parts) + " of AdamW's steps.")
    if adamw_final is not None:
        lines += ["", f"AdamW's tuned final loss on seed {first}: {adamw_final:.3f}."]
    at = []
    for name in ("muon", "normuon", "adamuon", "muon_nsr", "muon_vs"):
        old, new = (
            d.get(f"{name}|0.1 defaults, AdamW's lr"),
            d.get(f"{name}|defaults, AdamW's lr"),
        )
        if new is not None:
            at.append(f"{name} {_final(new):.3f} ({_pct(_f(new))})")
        if old is not None and (new is None or old["kwargs"] != new["kwargs"]):
            at.append(f"{name} with its 0.1 defaults {_final(old):.3f} ({_pct(_f(old))})")
    if at:
        lines += [
            "",
            f"At AdamW's tuned lr ({tuned['adamw']['lr']:.3g}), defaults otherwise: "
            + "; ".join(at)
            + f", against AdamW's {adamw_final:.3f}.",
        ]
    lines += [
        "",
        "The papers' own settings stay available as explicit arguments:",
        "",
        "| optimizer | setting | arguments |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {src} | `{kw}` |" for n, (src, kw) in paper_settings().items()]
    return "\n".join(lines)


def ablation(data: dict[str, Any]) -> str:
    """What each ablation change did, against the grid's best AdaMuon cell and NorMuon."""
    rows = {r["label"]: r for r in data["ablation"]}
    base = rows.get("grid's best")
    if base is None or _final(base) is None:
        return ""
    out = []
    for label, row in rows.items():
        if label == "grid's best" or _final(row) is None:
            continue
        delta = _final(row) - _final(base)
        word = "lowers" if delta < 0 else "raises"
        out.append(
            f"{label} {word} the final loss by {abs(delta):.3f} ({_pct(_f(base))} → {_pct(_f(row))})"
        )
    tuned = _rows(data, "table")
    normuon = tuned.get("normuon")
    text = "From AdaMuon's best cell: " + "; ".join(out) + "." if out else ""
    no_sign = rows.get("no sign (Muon + Adam)")
    spread = seed_spread(data)
    if no_sign is not None and _final(no_sign) is not None and spread is not None:
        gain = _final(base) - _final(no_sign)
        resolved = "more" if gain > spread else "less"  # a paired difference against seed noise
        changes = [
            _final(base) - _final(r)
            for k, r in rows.items()
            if k != "grid's best" and _final(r) is not None
        ]
        largest = "the largest single effect measured" if gain >= max(changes) else "one effect"
        text += (
            f" **Sign stabilisation** is {largest}: dropping it "
            f"{'gains' if gain > 0 else 'loses'} {abs(gain):.3f} on the same seed ({resolved} than "
            f"the {spread:.3f} one configuration moves between seeds). A plausible reading: at width {data['config']['model']['n_embd']} "
            "the sign step throws away the momentum's magnitudes before Newton–Schulz, and the "
            "elementwise second moment of the orthogonalised sign cannot restore them."
        )
    grid = data["grids"].get("adamuon")
    if grid is not None:
        cells = {(c["i"], c["j"]): c for c in grid["cells"]}
        bi, bj = grid["best"]
        coupled = cells.get((bi, 0))
        best = cells[(bi, bj)]
        if coupled is not None and (bi, bj) != (bi, 0):
            text += (
                f" **The lr coupling** (the grid): with the AdamW branch at the matrix lr "
                f"({coupled['lr']:.3g}, `adamw_lr_ratio=1`) AdaMuon ends at "
                f"{coupled['final_val_loss']:.3f}; at {best['adamw_lr']:.3g} "
                f"(ratio {best['adamw_lr'] / best['lr']:.3g}) at {best['final_val_loss']:.3f}."
            )
    if normuon is not None:
        text += (
            f" NorMuon, which normalises per neuron instead of elementwise and has no sign step, "
            f"reaches {_pct(_f(normuon))} ({_final(normuon):.3f})."
        )
    return text


def _branch_deltas(data: dict[str, Any]) -> list[str]:
    """Per 2-D grid: how much halving/doubling the AdamW-branch lr at the best matrix lr costs."""
    out = []
    for label, grid in data["grids"].items():
        if grid["adamw_lr0"] is None:
            continue
        cells = {(c["i"], c["j"]): c for c in grid["cells"]}
        bi, bj = grid["best"]
        best = cells[(bi, bj)]["final_val_loss"]
        worse = [
            (cells[(bi, j)]["final_val_loss"] - best, cells[(bi, j)]["adamw_lr"])
            for j in (bj - 1, bj + 1, bj - 2, bj + 2)
            if (bi, j) in cells
        ]
        if worse:
            text = ", ".join(f"+{dl:.3f} at {lr:.3g}" for dl, lr in worse)
            out.append(
                f"{label} (matrix lr {cells[(bi, bj)]['lr']:.3g}, best AdamW-branch lr "
                f"{cells[(bi, bj)]['adamw_lr']:.3g}: {best:.3f}): {text}"
            )
    return out


def switch_intro(data: dict[str, Any]) -> str:
    tuned = _rows(data, "table")
    adamw = tuned["adamw"]
    props = [r for label, r in tuned.items() if label.endswith("(defaults)")]
    lrs = sorted({r["lr"] for r in props})
    span = f"{lrs[0]:.3g}–{lrs[-1]:.3g}" if lrs else "–"
    return (
        "A Muon-family optimizer is two optimizers in one: the orthogonalised update for the hidden "
        "weight matrices (attention and MLP) and an AdamW branch for everything else (embeddings, "
        "output head, norms, biases), which runs at `lr × adamw_lr_ratio`. Switching from AdamW "
        "therefore sets two learning rates. Every Muon-family class's defaults share one `lr` "
        "between both branches (`adamw_lr_ratio=1`, update RMS matched to AdamW's; for Muon "
        '`scale="moonlight"`), with the lr chosen from the grids below. The papers\' own '
        "settings stay available as explicit arguments (the table at the end).\n\n"
        "**Start from the default lr**, not from your AdamW lr: on the benchmark AdamW's "
        f"tuned lr was {adamw['lr']:.3g} and the default lrs, each the best of its grid, lie "
        f"at {span}; the table shows what each costs.\n"
    )


def switch_branch(data: dict[str, Any]) -> str:
    deltas = _branch_deltas(data)
    d = _rows(data, "defaults")
    old = d.get("muon|0.1 defaults")
    rising = [
        label for label, g in data["grids"].items()
        if "AdamW-branch lr high" in g["unbracketed"]
    ]  # fmt: skip
    text = (
        "The AdamW branch here holds the byte embedding, the output head and the norms. "
        + (
            f"In the grids of {', '.join(rising)} the loss still falls at the largest "
            "AdamW-branch lr tried (the optimum lies above it). "
            if rising
            else ""
        )
        + "Moving it by factors of 2 from the best, at the best matrix lr:\n\n"
        + "\n".join(f"- {x}" for x in deltas)
        + "\n"
    )
    if old is not None:
        text += (
            f"\nMuon's 0.1 default ratio, 0.015 (AdamW branch at {old['adamw_lr']:.3g} for lr "
            f"{old['lr']:.3g}), ends at {_final(old):.3f} ({_pct(_f(old))} of AdamW's steps).\n"
        )
    return text


def switch_rules(data: dict[str, Any]) -> str:
    d = _rows(data, "defaults")
    at_adamw = [
        (n, d.get(f"{n}|defaults, AdamW's lr") or d.get(f"{n}|0.1 defaults, AdamW's lr"))
        for n in ("muon", "normuon", "adamuon", "muon_nsr", "muon_vs")
    ]
    at_adamw = [(n, r) for n, r in at_adamw if r is not None]
    keep = ", ".join(f"{n} {_pct(_f(r))}" for n, r in at_adamw)
    lines = [
        "## Rules of thumb\n",
        "1. Start from the defaults and set only `lr`; with ratio 1 the AdamW branch follows it.",
        "2. To tune, move `lr` by factors of 2 first, then `adamw_lr_ratio` by factors of 2 "
        "(½, 2): the AdamW branch's lr matters about as much as the matrices' one.",
        "3. Keeping AdamW's tuned lr unchanged leaves steps on the table, and can lose to "
        f"AdamW: at AdamW's lr, defaults otherwise, the share of AdamW's steps is {keep or '–'}"
        " (not reached: worse than AdamW).",
        "",
        "The papers' own settings are explicit arguments:",
        "",
        "| optimizer | setting | arguments |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {src} | `{kw}` |" for n, (src, kw) in paper_settings().items()]
    return "\n".join(lines) + "\n"


def prose(data: dict[str, Any]) -> dict[str, str]:
    """Section name → text (see :func:`lightning_muon.benchmarks.efficiency_page.render`)."""
    return {
        "intro": intro(data),
        "defaults": defaults(data),
        "ablation": ablation(data),
        "papers": papers(data),
        "switch_intro": switch_intro(data),
        "switch_branch": switch_branch(data),
        "switch_rules": switch_rules(data),
    }
