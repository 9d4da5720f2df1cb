/**
 * Size figures of src/ a reviewer asks for: files over 400 lines and functions of 60 lines or
 * more (function declarations, methods, arrow functions and function expressions, measured from
 * their first to their last line by the TypeScript parser). Run from the repository root:
 *   node --import tsx scripts/code-metrics.ts [DIR]
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';
import ts from 'typescript';

const LONG_FILE = 400;
const LONG_FUNCTION = 60;

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return sources(path);
    return name.endsWith('.ts') && !name.endsWith('.d.ts') ? [path] : [];
  });
}

function functionName(node: ts.Node, file: ts.SourceFile): string {
  const named = node as ts.Node & { name?: ts.Node };
  if (named.name) return named.name.getText(file);
  const parent = node.parent;
  if (parent && ts.isVariableDeclaration(parent)) return parent.name.getText(file);
  if (parent && ts.isPropertyAssignment(parent)) return parent.name.getText(file);
  return '(anonymous)';
}

function longFunctions(path: string): { name: string; lines: number }[] {
  const text = readFileSync(path, 'utf8');
  const file = ts.createSourceFile(path, text, ts.ScriptTarget.Latest, true);
  const found: { name: string; lines: number }[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isFunctionLike(node) && (node as { body?: ts.Node }).body) {
      const start = file.getLineAndCharacterOfPosition(node.getStart(file)).line;
      const end = file.getLineAndCharacterOfPosition(node.getEnd()).line;
      const lines = end - start + 1;
      if (lines >= LONG_FUNCTION) found.push({ name: functionName(node, file), lines });
    }
    ts.forEachChild(node, visit);
  };
  visit(file);
  return found;
}

const root = process.argv[2] ?? 'src';
const files = sources(root);
const longFiles = files
  .map((f) => ({ file: relative('.', f), lines: readFileSync(f, 'utf8').split('\n').length - 1 }))
  .filter((f) => f.lines > LONG_FILE)
  .sort((a, b) => b.lines - a.lines);
const functions = files
  .flatMap((f) => longFunctions(f).map((fn) => ({ ...fn, file: relative('.', f) })))
  .sort((a, b) => b.lines - a.lines);
console.log(`files over ${LONG_FILE} lines: ${longFiles.length}`);
for (const f of longFiles) console.log(`  ${f.lines} ${f.file}`);
console.log(`functions of ${LONG_FUNCTION}+ lines: ${functions.length}`);
for (const f of functions) console.log(`  ${f.lines} ${f.name} (${f.file})`);
