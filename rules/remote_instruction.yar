// Prose that tells the agent or the user to fetch and run something: the lure of the
// "prerequisites" campaigns, where the dangerous step is a human (or agent) following text.

rule instructs_download_binary {
  meta:
    category = "remote_instruction"
    severity = "high"
    message = "the text points to a remote executable or installer to download and run"
  strings:
    $get = /\b(download|get|grab|fetch|install)\b[^\n]{0,200}https?:\/\/[^\s)"'>]{1,300}\.(exe|msi|dmg|pkg|apk|bin|run|appimage|scr|bat|cmd|ps1|vbs|jar|command)\b/i
    $run = /https?:\/\/[^\s)"'>]{1,300}\.(exe|msi|dmg|pkg|scr|appimage|bin|command)\b[^\n]{0,200}\b(run|execute|launch|open|double-click|install)\b/i
  condition:
    (is_markdown or is_skill_md) and any of them
}

rule instructs_password_archive {
  meta:
    category = "remote_instruction"
    severity = "high"
    message = "the text hands out a password for an archive (a way past malware scanners)"
  strings:
    $a = /\b(zip|archive|rar|7z|7-zip)\b[^\n]{0,150}\b(pass|password|passwd|pwd|passphrase)\s*(is\s+|[:=]\s*)["'`]?[A-Za-z0-9!@#$%^&*_-]{3,}/i
    $b = /\b(extract|unzip|unpack|open|decompress)\b[^\n]{0,100}\b(with|using)\s+(the\s+)?(pass|password|passphrase)\b/i
  condition:
    (is_markdown or is_skill_md) and any of them
}

rule instructs_paste_terminal {
  meta:
    category = "remote_instruction"
    severity = "medium"
    message = "the text tells the reader to paste a command into a terminal"
  strings:
    $paste = /\b(copy\s+(and|&)\s+)?paste\b[^\n]{0,60}\b(into|in)\s+(your\s+|a\s+|the\s+)?(terminal|shell|command\s+prompt|powershell|cmd|run\s+dialog)\b/i
    $open = /\b(open|launch)\s+(the\s+|a\s+|your\s+)?(terminal|powershell|command\s+prompt)\b[^\n]{0,80}\b(paste|enter)\b/i
  condition:
    (is_markdown or is_skill_md) and any of them
}

rule instructs_disable_protection {
  meta:
    category = "remote_instruction"
    severity = "high"
    message = "the text or code disables OS malware protection (Gatekeeper, Defender, SIP)"
  strings:
    $spctl = /\bspctl\s+--master-disable\b/
    $defender = /\bSet-MpPreference\b[^\n]{0,80}-Disable(RealtimeMonitoring|IOAVProtection|BehaviorMonitoring)\b/i
    $exclusion = /\bAdd-MpPreference\b[^\n]{0,80}-ExclusionPath\b/i
    $sip = /\bcsrutil\s+disable\b/
    $prose = /\b(disable|turn\s+off|deactivate)\s+(your\s+|the\s+)?(antivirus|anti-virus|gatekeeper|windows\s+defender|defender|xprotect|endpoint\s+protection)\b/i
  condition:
    any of them
}

rule quarantine_removal {
  meta:
    category = "remote_instruction"
    severity = "medium"
    message = "removes the macOS quarantine attribute so a downloaded binary runs unchecked"
  strings:
    $a = /\bxattr\s+(-[rc]+\s+)*-d\s+com\.apple\.quarantine\b/
    $b = /\bxattr\s+-c\b/
  condition:
    any of them
}

rule instructs_prerequisite_run {
  meta:
    category = "remote_instruction"
    severity = "medium"
    message = "the text makes running a remote command a prerequisite for using the skill"
  strings:
    $a = /\b(you\s+must|always|first|before\s+(using|running)\s+(this|the)\s+skill,?)\s+(run|execute|install)\b[^\n]{0,120}(https?:\/\/|\bcurl\b|\bwget\b)/i
  condition:
    (is_markdown or is_skill_md) and $a
}
