/** Entry point of the `ipferry` executable (bin/ipferry runs the compiled form of this file). */
import { main } from './main.js';

process.exitCode = await main(process.argv);
