import pytest

from medvae_lib.checks import ResultOutOfRange, expect


def test_expect_prints_a_stable_statement_and_fails_with_the_measured_value(capsys):
    expect("PSNR (dB)", 28.0123, 26, 31)
    expect("PSNR (dB)", 28.0456, 26, 31)
    out = capsys.readouterr().out.splitlines()
    assert (
        out == ["PSNR (dB): between 26 and 31 - yes"] * 2
    )  # same text for nearby values
    expect("gap", 0.7, low=0.5)
    assert capsys.readouterr().out == "gap: at least 0.5 - yes\n"
    with pytest.raises(
        ResultOutOfRange,
        match=r"PSNR \(dB\): expected between 26 and 31, measured 25.9",
    ):
        expect("PSNR (dB)", 25.9, 26, 31)
    with pytest.raises(ResultOutOfRange, match="measured nan"):
        expect("loss", float("nan"), high=1.0)
    with pytest.raises(ValueError, match="at least one"):
        expect("x", 1.0)


def test_a_smoke_run_prints_a_missed_range_instead_of_raising(capsys, monkeypatch):
    monkeypatch.setenv("MEDVAE_SMOKE", "1")
    expect("AUROC", 0.5, low=0.9)
    assert capsys.readouterr().out == (
        "AUROC: expected at least 0.9, measured 0.5 (smoke run: not enforced)\n"
    )
    # a break-even that a few steps never reach is a measurement, not a failure
    expect("break-even passes", float("inf"), low=0.1, high=50)
    assert "measured inf (smoke run: not enforced)" in capsys.readouterr().out
    with pytest.raises(ResultOutOfRange, match="measured nan"):
        expect("loss", float("nan"), high=1.0)  # a broken run is not a short one
    monkeypatch.setenv("MEDVAE_SMOKE", "0")
    with pytest.raises(ResultOutOfRange):
        expect("AUROC", 0.5, low=0.9)
