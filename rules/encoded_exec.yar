// Encoded payloads decoded and executed: the text hides what runs. Decoded base64 blobs are
// also rescanned by the whole pack (see src/scan/native.rs), so these rules catch the
// decoding step and the rescan catches the payload.

rule base64_decode_to_shell {
  meta:
    category = "encoded_exec"
    severity = "critical"
    message = "a base64 payload is decoded and piped into a shell or interpreter"
  strings:
    $pipe = /\bbase64\s+(-d|-D|--decode|-di|-id)\b[^\n]{0,100}\|\s*(sudo\s+)?(\/bin\/|\/usr\/bin\/)?((ba|z|da|k)?sh|python[0-9.]*|perl|ruby|node)\b/
    $sub = /\b(ba|z)?sh\s+-c\s+["']?\$\([^\n]{0,4000}\bbase64\s+(-d|-D|--decode)\b/
    $eval = /\beval\s+["']?\$\([^\n]{0,4000}\bbase64\s+(-d|-D|--decode)\b/
    $openssl = /\bopenssl\s+(enc\s+)?(-d\s+)?-?base64\s+-d[^\n]{0,100}\|\s*(ba|z)?sh\b/
  condition:
    any of them
}

rule hex_decode_to_shell {
  meta:
    category = "encoded_exec"
    severity = "critical"
    message = "a hex or escaped payload is decoded and piped into a shell"
  strings:
    $xxd = /\bxxd\s+(-r\s+-p|-p\s+-r|-rp|-pr|-r)\b[^\n]{0,100}\|\s*(ba|z|da)?sh\b/
    $printf = /\b(printf|echo\s+-e)\s+["'](\\x[0-9a-fA-F]{2}|\\[0-7]{3}){8,}[^\n]{0,100}\|\s*(ba|z|da)?sh\b/
  condition:
    any of them
}

rule python_decode_exec {
  meta:
    category = "encoded_exec"
    severity = "critical"
    message = "Python decodes (base64/hex/zlib/marshal) and executes the result"
  strings:
    $mod = /\b(exec|eval)\s*\(\s*(compile\s*\(\s*)?(__import__\s*\(\s*['"](base64|zlib|codecs|marshal|binascii)['"]\s*\)|base64|zlib|codecs|marshal|binascii)\.(b64decode|b32decode|b85decode|a85decode|b16decode|urlsafe_b64decode|decode|decompress|loads|unhexlify|a2b_base64)\s*\(/
    $hex = /\b(exec|eval)\s*\(\s*(bytes|bytearray)\.fromhex\s*\(/
    $nested = /\b(exec|eval)\s*\(\s*(zlib|marshal)\.(decompress|loads)\s*\(\s*(base64|codecs)\./
  condition:
    any of them
}

rule js_decode_eval {
  meta:
    category = "encoded_exec"
    severity = "critical"
    message = "JavaScript decodes base64/hex and evaluates the result"
  strings:
    $atob = /\b(eval|Function)\s*\(\s*(atob|Buffer\.from)\s*\(/
    $buf = /\beval\s*\(\s*Buffer\.from\s*\([^\n]{0,4000}['"](base64|hex)['"]\s*\)\s*\.toString/
    $fn = /\bnew\s+Function\s*\(\s*(atob|Buffer\.from)\s*\(/
  condition:
    any of them
}

rule powershell_encoded_command {
  meta:
    category = "encoded_exec"
    severity = "critical"
    message = "PowerShell runs an encoded command or decodes base64 into Invoke-Expression"
  strings:
    $enc = /\b(powershell|pwsh)(\.exe)?\b[^\n]{0,100}\s-(e|ec|en|enc|enco|encod|encode|encoded|encodedcommand)\s+[A-Za-z0-9+\/=]{20,}/i
    $b64iex = /FromBase64String\s*\([^\n]{0,4000}\b(iex|Invoke-Expression)\b/i
    $iexb64 = /\b(iex|Invoke-Expression)\b[^\n]{0,200}FromBase64String/i
  condition:
    any of them
}

rule reversed_string_exec {
  meta:
    category = "encoded_exec"
    severity = "high"
    message = "a reversed or rotated string is executed (exec(s[::-1]), rot13 decode)"
  strings:
    $py = /\b(exec|eval)\s*\([^\n]{0,300}\[\s*::\s*-1\s*\]/
    $rot = /\b(exec|eval)\s*\(\s*codecs\.decode\s*\([^\n]{0,300}['"]rot[_-]?13['"]/
    $js = /\.split\(\s*['"]{2}\s*\)\s*\.reverse\(\s*\)\s*\.join\(\s*['"]{2}\s*\)[^\n]{0,100}\b(eval|Function|exec)\b/
    $js2 = /\b(eval|Function)\s*\([^\n]{0,200}\.split\(\s*['"]{2}\s*\)\s*\.reverse\(\s*\)/
  condition:
    any of them
}

rule encoded_script_payload {
  meta:
    category = "encoded_exec"
    severity = "medium"
    message = "a base64-encoded script (#!/bin/sh, #!/usr/bin/env ...) is embedded"
  strings:
    $sh = "IyEvYmluL2Jhc2g"
    $sh2 = "IyEvYmluL3No"
    $env = "IyEvdXNyL2Jpbi9lbnY"
  condition:
    any of them
}
