; Inno Setup script: Corolla's Windows installer, from the one-folder bundle.
;
; Built by packaging\windows\build.ps1, which makes the bundle first (CPU or CUDA torch) and then runs
;   ISCC /DAppVersion=0.1.0 /DVariant=cuda packaging\windows\corolla.iss
; Variant names the torch build inside the bundle: it only names the installer and its description;
; what the bundle holds is decided when it is built (COROLLA_BUNDLE_VARIANT).
;
; Installs per user (no administrator prompt; an administrator may choose all users), adds a Start
; menu entry, optionally starts Corolla at sign-in through the same HKCU Run value the app's own
; "Start at login" setting writes (so either can undo the other), and registers an uninstaller.

#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif
#ifndef Variant
  #define Variant "cpu"
#endif
#if Variant == "cuda"
  #define VariantText "for NVIDIA GPUs (CUDA)"
#else
  #define VariantText "CPU only"
#endif
#define BundleDir "..\..\build\bundle\dist\corolla"

[Setup]
AppId={{6F1D2C59-4C1B-4E0B-9B4A-2A7C0C5E1A13}
AppName=Corolla
AppVersion={#AppVersion}
AppVerName=Corolla {#AppVersion} ({#VariantText})
AppPublisher=Corolla
DefaultDirName={autopf}\Corolla
DefaultGroupName=Corolla
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir=..\..\build\bundle
OutputBaseFilename=Corolla-{#AppVersion}-win64-{#Variant}-setup
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern
UninstallDisplayIcon={app}\Corolla.exe
UninstallDisplayName=Corolla ({#VariantText})
; The app and its servers hold files open: close them (Restart Manager) before replacing or removing.
CloseApplications=yes
RestartApplications=no

[Tasks]
Name: "startatlogin"; Description: "Start Corolla when I sign in (it stays in the tray; lending the GPU stays off until you turn it on)"; GroupDescription: "Start-up:"; Flags: unchecked
Name: "desktopicon"; Description: "Create a desktop shortcut"; GroupDescription: "Shortcuts:"; Flags: unchecked

[Files]
Source: "{#BundleDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
; Corolla.exe is the windowed program (no console); corolla.exe beside it is the command line.
Name: "{autoprograms}\Corolla"; Filename: "{app}\Corolla.exe"; Comment: "Chat with the swarm and lend your GPU"
Name: "{autoprograms}\Uninstall Corolla"; Filename: "{uninstallexe}"
Name: "{autodesktop}\Corolla"; Filename: "{app}\Corolla.exe"; Tasks: desktopicon

[Registry]
; The value name and format the app's own setting uses (app/contribute/autostart.py).
Root: HKCU; Subkey: "Software\Microsoft\Windows\CurrentVersion\Run"; ValueType: string; ValueName: "Corolla"; ValueData: """{app}\Corolla.exe"""; Flags: uninsdeletevalue; Tasks: startatlogin

[Run]
Filename: "{app}\Corolla.exe"; Description: "Start Corolla now"; Flags: nowait postinstall skipifsilent

[UninstallDelete]
; Files the program writes beside itself (compiled caches); settings, history and the prepared model
; live in the user's AppData folders and are kept, as most programs do.
Type: filesandordirs; Name: "{app}\_internal\__pycache__"

[Code]
// The app may have written the Run value itself (its "Start at login" setting) without this task:
// remove it on uninstall either way, so nothing tries to start a program that is gone.
procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
begin
  if CurUninstallStep = usPostUninstall then
    RegDeleteValue(HKEY_CURRENT_USER, 'Software\Microsoft\Windows\CurrentVersion\Run', 'Corolla');
end;
