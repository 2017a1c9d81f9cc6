"""A two-shot "Step k:" prompt and word problems shared by the tests that talk to a real model."""

FEW_SHOT = (
    "Question: Tom has 3 apples and buys 2 more. How many apples does he have?\n"
    "Step 1: Tom starts with 3 apples.\n"
    "Step 2: He buys 2 more, so 3 + 2 = 5.\n"
    "Answer: 5\n\n"
    "Question: A box holds 4 pens. How many pens are in 3 boxes?\n"
    "Step 1: Each box holds 4 pens.\n"
    "Step 2: 3 boxes hold 3 * 4 = 12 pens.\n"
    "Answer: 12\n\n"
)
PROBLEMS = [
    "Sara has 5 candies and eats 2. How many candies are left?",
    "A car travels 60 km each hour. How far does it go in 2 hours?",
    "There are 7 birds on a tree and 3 fly away. How many birds remain?",
    "Ben has 10 coins and gives 4 to Ann. How many coins does Ben have now?",
]
