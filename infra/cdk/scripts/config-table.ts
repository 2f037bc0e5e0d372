// Prints the config-key table of DEPLOYING.md: `npm run --silent docs:config-table`.
import { configTableMarkdown } from '../lib/config-doc';

console.log(configTableMarkdown());
