<?php
// tests/programs/php.sh: a PHP CLI workload with Debian's default extensions loaded (each opened
// with RTLD_DEEPBIND).  Deterministic output.
$a = [];
for ($i = 0; $i < 300000; $i++) $a["k$i"] = str_repeat(chr(97 + $i % 26), $i % 60);
for ($i = 0; $i < 300000; $i += 2) unset($a["k$i"]);
echo count($a), "\n";
$j = json_encode($a);
$b = json_decode($j, true);
echo count($b), " ", md5($j), "\n";
$s = "";
for ($i = 0; $i < 100000; $i++) $s .= dechex($i);
echo strlen($s), " ", crc32($s), "\n";
$x = [];
for ($i = 0; $i < 100000; $i++) $x[] = [$i, (string)$i, $i / 3];
usort($x, fn($p, $q) => $q[0] <=> $p[0]);
echo $x[0][1], "\n";
preg_match_all('/k(\d+)7"/', $j, $m);
echo count($m[0]), "\n";
// extensions that are shared objects in Debian's php8.2-common, opened with RTLD_DEEPBIND
$t = token_get_all('<?php function f($a) { return $a + 1; } echo f(41);');
echo count($t), "\n";
echo class_exists('PDO') ? "pdo " . count(PDO::getAvailableDrivers()) . "\n" : "no pdo\n";
$phar = getcwd() . '/w.phar';   // (php.sh runs with phar.readonly=0 in a scratch directory)
$p = new Phar($phar);
$p['a.txt'] = str_repeat('phar', 1000);
echo strlen(file_get_contents("phar://$phar/a.txt")), "\n";
unset($p);
echo ctype_digit('12345') ? "ctype\n" : "no ctype\n";
echo iconv('UTF-8', 'ISO-8859-1//TRANSLIT', "caf\u{e9}") === "caf\xe9" ? "iconv\n" : "no iconv\n";
$f = new finfo(FILEINFO_MIME_TYPE);
echo $f->buffer("%PDF-1.4\n"), "\n";
echo strlen(sodium_crypto_generichash(str_repeat('x', 100000))), "\n";
echo md5(serialize(array_slice($b, 0, 5000))), "\n";
