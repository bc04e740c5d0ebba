"""``python -m palisade.agent --node N --datastore URL [--netns NS]``."""

from palisade.agent._run import main

raise SystemExit(main())
