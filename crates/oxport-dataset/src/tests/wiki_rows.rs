// Shared test data, `include!`d by `src/tests.rs` (unit tests) and by the loopback-hub tests in
// `tests/it/dataset/calibration.rs`.

/// wikitext-2-raw-v1's first train rows, shortened, empty rows included.
const WIKI_ROWS: &[&str] = &[
    "",
    " = Valkyria Chronicles III = \n",
    "",
    " Senjō no Valkyria 3 : Unrecorded Chronicles ( Japanese : 戦場のヴァルキュリア3 , lit . Valkyria of the Battlefield 3 ) , commonly referred to as Valkyria Chronicles III outside Japan , is a tactical role @-@ playing video game developed by Sega and Media.Vision for the PlayStation Portable . \n",
    " The game began development in 2010 , carrying over a large portion of the work done on Valkyria Chronicles II . \n",
    "",
    " = = Gameplay = = \n",
    "",
    " As with previous Valkyira Chronicles games , Valkyria Chronicles III is a tactical role @-@ playing game where players take control of a military unit . \n",
    " Troops are divided into five classes : Scouts , Shocktroopers , Engineers , Lancers and Armored Soldier . \n",
    "",
    " = = Plot = = \n",
];

/// optimum-intel's `get_wikitext2(tokenizer, seqlen=8, nsamples=4)` over `WIKI_ROWS` with transformers 5.5.4's
/// `AutoTokenizer.from_pretrained("fixtures/tokenizers/phi3-sp")` and `random.seed(0)`.
const WIKI_WINDOWS_4X8: [[u32; 8]; 4] = [
    [355, 983, 415, 348, 419, 596, 339, 305],
    [784, 477, 321, 394, 618, 412, 915, 330],
    [341, 285, 385, 385, 424, 350, 324, 200],
    [480, 826, 384, 325, 339, 371, 315, 426],
];
