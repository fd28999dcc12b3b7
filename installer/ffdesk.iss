; Inno Setup 6.3+ script for the Windows installer of ffdesk.
;
;   iscc /DAppVersion=0.1.0 [/DSourceDir=..\dist\ffdesk] [/DIconFile=..\build\ffdesk.ico] installer\ffdesk.iss
;
; SourceDir is the PyInstaller one-folder build (packaging/ffdesk.spec): ffdesk.exe (windowed,
; the shortcut target), ffdesk-cli.exe (console, same program) and _internal\.
; Output: dist\ffdesk-<version>-windows-x86_64-setup.exe
;
; Per-user install without administrator rights by default (%LOCALAPPDATA%\Programs\ffdesk);
; the first page offers an all-users install, which needs elevation. Silent install for CI:
;   setup.exe /VERYSILENT /SUPPRESSMSGBOXES /CURRENTUSER /DIR=C:\somewhere

#ifndef AppVersion
  #error Pass the version: iscc /DAppVersion=x.y.z installer\ffdesk.iss
#endif
#ifndef SourceDir
  #define SourceDir "..\dist\ffdesk"
#endif
#define AppName "ffdesk"
#define AppExe "ffdesk.exe"
#define CliExe "ffdesk-cli.exe"

[Setup]
; Never change AppId: upgrades and the uninstaller find earlier installs by it.
AppId={{3CA03056-6F2B-4370-978C-48B9D8F000A3}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=ffdesk
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
PrivilegesRequiredOverridesAllowed=dialog
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
MinVersion=10.0
OutputDir=..\dist
OutputBaseFilename={#AppName}-{#AppVersion}-windows-x86_64-setup
Compression=lzma2/max
SolidCompression=yes
WizardStyle=modern
#ifdef IconFile
SetupIconFile={#IconFile}
#endif
UninstallDisplayIcon={app}\{#AppExe}
UninstallDisplayName={#AppName}
; A running ffdesk (tray app, node, its embedded PostgreSQL) holds files in {app}: PrepareToInstall
; first asks it to quit ("ffdesk gui --quit now"); whatever still runs is closed through the
; Restart Manager. It is not restarted: the user starts ffdesk from the last page.
CloseApplications=yes
RestartApplications=no

[Languages]
Name: "en"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked
Name: "autostart"; Description: "Start ffdesk when I sign in to Windows (minimised to the tray)"; GroupDescription: "Start-up:"; Flags: unchecked

[InstallDelete]
; The bundle's file list changes between versions: never leave stale libraries behind.
Type: filesandordirs; Name: "{app}\_internal"

[Files]
Source: "{#SourceDir}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\{#AppExe}"; Comment: "FFmpeg cluster on your desktop"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\{#AppExe}"; Tasks: desktopicon

[Registry]
; The same value the app's own autostart switch writes (ffdesk/system/autostart.py: RUN_KEY,
; RUN_VALUE "ffdesk", command "<exe> gui --minimized"), so the app's settings show it as on.
Root: HKCU; Subkey: "Software\Microsoft\Windows\CurrentVersion\Run"; ValueType: string; ValueName: "ffdesk"; ValueData: """{app}\{#AppExe}"" gui --minimized"; Tasks: autostart; Flags: uninsdeletevalue

[Run]
Filename: "{app}\{#AppExe}"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

[Code]
const
  RunKey = 'Software\Microsoft\Windows\CurrentVersion\Run';
  RunValue = 'ffdesk';

var
  DeleteUserData: Boolean;

{ True while an ffdesk.exe or ffdesk-cli.exe process exists (any folder). }
function FfdeskRunning(): Boolean;
var
  Locator, Service, Found: Variant;
begin
  Result := False;
  try
    Locator := CreateOleObject('WbemScripting.SWbemLocator');
    Service := Locator.ConnectServer('.', 'root\CIMV2');
    Found := Service.ExecQuery('SELECT ProcessId FROM Win32_Process WHERE Name = ''{#AppExe}'' OR Name = ''{#CliExe}''');
    Result := Found.Count > 0;
  except
    Result := False;  { no WMI: the Restart Manager still closes what holds our files }
  end;
end;

{ Ask a running ffdesk to hand its jobs back to the queue and quit, then wait up to 30 s. }
procedure QuitRunningApp(const Dir: String);
var
  Cli: String;
  ResultCode, I: Integer;
begin
  Cli := AddBackslash(Dir) + '{#CliExe}';
  if not FileExists(Cli) then
    Exit;
  if not Exec(Cli, 'gui --quit now', '', SW_HIDE, ewWaitUntilTerminated, ResultCode) then
    Exit;
  if ResultCode <> 0 then
    Exit;  { "no running ffdesk app to quit" }
  for I := 1 to 60 do
  begin
    if not FfdeskRunning() then
      Break;
    Sleep(500);
  end;
end;

function PrepareToInstall(var NeedsRestart: Boolean): String;
begin
  QuitRunningApp(ExpandConstant('{app}'));
  Result := '';
end;

procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
var
  DataDir: String;
  ResultCode: Integer;
begin
  { platformdirs (appauthor=False) keeps config, data, logs and cache here on Windows. }
  DataDir := ExpandConstant('{localappdata}\{#AppName}');
  if CurUninstallStep = usUninstall then
  begin
    QuitRunningApp(ExpandConstant('{app}'));
    { The app's own autostart switch may have written it: never leave a Run entry pointing
      at a program that is gone. }
    RegDeleteValue(HKEY_CURRENT_USER, RunKey, RunValue);
    DeleteUserData := False;
    if DirExists(DataDir) and not UninstallSilent() then
      DeleteUserData := MsgBox('Keep your ffdesk data?' + #13#10 + #13#10 +
        'Settings, logs, job history and the embedded database are in' + #13#10 +
        DataDir + #13#10 + #13#10 +
        'Yes keeps them for a later installation; No deletes them now.',
        mbConfirmation, MB_YESNO) = IDNO;
    if DeleteUserData then
      { The embedded PostgreSQL server's files cannot be deleted while it runs. }
      Exec(ExpandConstant('{app}\{#CliExe}'), 'db stop', '', SW_HIDE, ewWaitUntilTerminated, ResultCode);
  end;
  if (CurUninstallStep = usPostUninstall) and DeleteUserData then
  begin
    if not DelTree(DataDir, True, True, True) then
      MsgBox('Some files in ' + DataDir + ' could not be deleted; remove the folder by hand.',
        mbInformation, MB_OK);
  end;
end;
