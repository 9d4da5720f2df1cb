/** What the demo prints: plain lines, marks for what held, dimmed notes and commands as typed. */

export type Paint = (text: string) => string;

export class Output {
  readonly bold: Paint;
  readonly green: Paint;
  readonly red: Paint;
  readonly dim: Paint;

  /** `color`: bold headers and coloured marks (ANSI), for a terminal. */
  constructor(
    readonly out: (line: string) => void,
    color: boolean,
  ) {
    const paint =
      (code: string): Paint =>
      (text) =>
        color ? `\u001b[${code}m${text}\u001b[0m` : text;
    this.bold = paint('1');
    this.green = paint('32');
    this.red = paint('31');
    this.dim = paint('2');
  }

  /** Prints each line of `text` (a trailing newline adds none). */
  say(text = ''): void {
    for (const line of text.replace(/\n$/, '').split('\n')) this.out(line);
  }

  ok(text: string): void {
    this.out(`  ${this.green('✓')} ${text}`);
  }

  failed(text: string): void {
    this.out(`  ${this.red('✗')} ${text}`);
  }

  note(text: string): void {
    this.out(`    ${this.dim(text)}`);
  }

  /** A command as a person would type it, with a comment after it. */
  command(line: string, comment = ''): void {
    this.out(this.bold(`$ ${line}`) + (comment === '' ? '' : this.dim(`   (${comment})`)));
  }
}
